"""JCS web viewer: the JCS Diagnosis Slicer scene logic served to a browser through trame-slicer.

`jcs-viewer [FILE_OR_DICOM_DIR] [--sample]` starts a loopback server showing the CT in Slicer's slice and
3-D views, with a panel that runs the diagnosis, overlays the Grad-CAM heatmap, lets the radiologist
correct the lesion segmentation with trame-slicer's segment editor and downloads the results.

Built as trame-slicer is: the page state is typed dataclasses (:mod:`.state`), each feature a small
logic class bound to its state (:mod:`.logic`), the layout (:mod:`.ui`) binds to their state names, and
:class:`.viewer.JCSViewer` wires them together.
"""
