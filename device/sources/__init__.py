"""Frame sources: one interface (:class:`FrameSource`), several adapters, chosen by a spec string.

========================  ==========================================================
spec                      adapter
========================  ==========================================================
``file:PATH``             one image, video or DICOM file (by suffix)
``folder:PATH``           every image / DICOM / video file in a folder, sorted
``video:PATH``            a video file through OpenCV
``dicom:PATH``            a DICOM file (every cine frame, or ``dicom_frame``)
``v4l2:/dev/videoN``      USB/HDMI capture card through OpenCV's V4L2 backend
``picamera``              Raspberry Pi camera through picamera2
========================  ==========================================================
"""

from device.sources.base import Frame, FrameSource
from device.sources.spec import open_source, parse_spec

__all__ = ["Frame", "FrameSource", "open_source", "parse_spec"]
