"""Using a trained model: predict on people's own images, the web page and HTTP API, ONNX export."""
