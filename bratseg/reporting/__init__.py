"""Shareable outputs of a prediction: the PDF report (:mod:`.report`) and the key-slice
panel PNG (:mod:`.figures`)."""
