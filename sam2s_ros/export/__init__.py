"""Graph export: the graph contract (:mod:`sam2s_ros.export.contract`), ONNX export
(:mod:`sam2s_ros.export.onnx_export`) and TensorRT engine builds
(:mod:`sam2s_ros.export.tensorrt_build`)."""
