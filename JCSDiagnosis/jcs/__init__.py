"""JCS Diagnosis engine: explainable COVID-19 diagnosis of chest CT.

Joint classification and segmentation after Wu et al., "JCS: An Explainable COVID-19 Diagnosis
System by Joint Classification and Segmentation", IEEE TIP 2021. Plain Python + PyTorch; never
imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"
