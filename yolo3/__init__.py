"""YOLOv3 and tiny-YOLOv3 for Keras 3: a port of keras-yolo3."""
