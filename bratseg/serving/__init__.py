"""Web serving: upload handling, rendering and the shared inference service behind the
Flask app (:mod:`bratseg.serving.flask_app`) and the Gradio demo."""
