"""JCS web viewer: the JCS Diagnosis Slicer scene logic served to a browser through trame-slicer.

`jcs-viewer [FILE_OR_DICOM_DIR] [--sample]` starts a loopback server showing the CT in Slicer's slice and
3-D views, with a panel that runs the diagnosis, overlays the Grad-CAM heatmap, lets the radiologist
correct the lesion segmentation with trame-slicer's segment editor and downloads the results.
"""
