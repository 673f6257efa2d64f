"""The Gradio UI of Diffusion Classroom: one module per tab. It never imports torch."""
