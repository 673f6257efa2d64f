"""Diffusion Classroom: the app's entry point in a clone and on a Space (installed: ``diffusion-classroom``).

    python app.py                      # http://127.0.0.1:7860 with the embedded models
    python app.py --help               # every option (the same as diffusion-classroom --help)
"""

from demo.launch import DEFAULT_HOST, DEFAULT_PORT, listen_address, main, parse_args

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "listen_address", "main", "parse_args"]

if __name__ == "__main__":
    main()
