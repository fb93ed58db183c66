"""Qt-free part of the JCS Diagnosis Slicer module.

Imports only MRML/VTK (`slicer` from desktop Slicer or from slicer-core), SimpleITK, numpy and the
`jcs` engine, so tests and the web viewer use it without Qt. Entry point:
`JCSDiagnosisLib.logic.JCSDiagnosisSceneLogic(appLogic)`, a thin facade over one module per job:

- :mod:`.process` runs `jcs diagnose --progress json` in a child process (progress, cancel);
- :mod:`.engine` checks the CT, starts the engine and loads its files as new result nodes;
- :mod:`.nodes` creates and finds a result's nodes and keeps the engine's reading on them;
- :mod:`.update` re-measures an edited segmentation ('Update results');
- :mod:`.export` writes DICOM-SEG and the SR report;
- :mod:`.navigation`, :mod:`.display` move and style the views; :mod:`.tables` fills the table nodes;
- :mod:`.reading` says what a result means, in `jcs.wording`'s words; :mod:`.volumes` converts arrays.
"""
