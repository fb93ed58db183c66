"""Qt-free part of the JCS Diagnosis Slicer module (scene logic, engine process, DICOM export).

Imports only MRML/VTK (`slicer` from desktop Slicer or from slicer-core), SimpleITK, numpy and the
`jcs` engine, so tests and the web viewer use it without Qt. Entry point:
`JCSDiagnosisLib.logic.JCSDiagnosisSceneLogic(appLogic)`.
"""
