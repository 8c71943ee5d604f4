"""shipdelay: delay risk for in-flight multimodal shipments."""

__version__ = "0.1.0"
