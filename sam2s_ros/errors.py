"""Exception hierarchy of sam2s_ros.

Every error the library raises on bad input derives from :class:`Sam2sError`, so the node
can log it, count it in diagnostics and keep running. Library code never calls
``sys.exit``; command-line tools turn these into exit codes.
"""


class Sam2sError(Exception):
    """Base class of all sam2s_ros errors."""


class ConfigError(Sam2sError, ValueError):
    """A configuration value (model size, image_size, a DiveMem limit, a parameter) is invalid."""


class CheckpointError(Sam2sError):
    """A checkpoint is missing, unreadable, unsafe (pickled code), or does not fit the model."""


class BackendError(Sam2sError):
    """An inference backend cannot be used (library or device missing, bad ONNX/engine file)."""


class FrameError(Sam2sError, ValueError):
    """An input image has the wrong shape, dtype, encoding or size."""


class PromptError(Sam2sError, ValueError):
    """A prompt is invalid: NaN or out-of-frame points, inverted box, mask of the wrong size,
    conflicting inputs, too many instruments."""


class UnknownInstrumentError(PromptError, KeyError):
    """An instrument id that the tracker does not track."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else "unknown instrument"


class StateFileError(Sam2sError):
    """A tracker state cannot be saved or loaded: invalid file name, not a regular file, exists
    without overwrite, unwritable, corrupt or unsafe, invalid content, other model or image_size."""


class BagError(Sam2sError):
    """A rosbag cannot be written or read as expected."""


class ExportError(Sam2sError):
    """ONNX export or TensorRT engine build failed or was given bad arguments."""


class LifecycleError(Sam2sError):
    """A lifecycle transition of the managed node failed (e.g. ``autostart`` could not
    configure or activate it); the message names the transition and its reason."""
