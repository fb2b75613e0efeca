"""A trained model on test images: a saved model with its test-time views (``inference``)
and the test figures from its outputs, per split, with the confusion matrix (``results``)."""
