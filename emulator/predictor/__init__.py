"""The runtime predictor: measured tables, the models fitted on them, and the model file."""
