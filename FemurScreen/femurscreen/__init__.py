"""FemurScreen core: opportunistic osteoporosis screening on abdominal/pelvic CT.

This package never imports Slicer, Qt or VTK-MRML, so that the same pipeline runs from the
command line, in batch jobs and inside the Slicer module (which imports it, not the reverse).
"""

__version__ = "0.1.0"
