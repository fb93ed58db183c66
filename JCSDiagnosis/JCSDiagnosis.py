"""JCS Diagnosis: explainable COVID-19 reading of chest CT in 3D Slicer.

After Wu et al., "JCS: An Explainable COVID-19 Diagnosis System by Joint Classification and
Segmentation", IEEE TIP 2021. GUI only: everything below Qt lives in JCSDiagnosisLib (tested on
slicer-core), the engine (`jcs`) runs in a background PythonSlicer process.
"""

import shutil
import tempfile
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from jcs.options import AUTO, DecisionRule, Device, SegmentPolicy
from jcs.wording import HEATMAP_LEGEND
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Packages the engine needs besides what Slicer bundles (import name, pip requirement). No tqdm: the
#: module runs the engine with `--progress json`, which draws no bar.
REQUIREMENTS = [
    ("safetensors", "safetensors>=0.4"),
    ("skimage", "scikit-image>=0.21"),
    ("scipy", "scipy>=1.10"),
    ("highdicom", "highdicom>=0.23"),
]
#: Packages Slicer ships; pip is constrained to their installed versions so it never replaces them.
PROTECTED = ["numpy", "SimpleITK", "pydicom", "vtk", "torch", "pillow", "requests"]
MINIMUM_TORCH = "2.2"


class JCSDiagnosis(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("JCS Diagnosis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["JCS Diagnosis developers"]
        self.parent.helpText = _(
            "Explainable COVID-19 reading of a chest CT. Research use only, not for clinical diagnosis."
            "<p><b>How the case is decided.</b> Every axial slice is scored and either counts or not; the "
            "case is positive when more than T slices count. Which rule counts a slice comes from the "
            "loaded weights' model card and is named in the panel above Diagnose: the <i>classifier rule</i> "
            "(the paper's: COVID-19 probability over 0.5) or the <i>segmenter rule</i> (segmented "
            "opacification over a share of the slice's lung). The Grad-CAM heatmap and the per-slice plot "
            "show the evidence; the lesion segmentation is measured in the tables (readable labels and "
            "units; the table nodes keep every value at full precision).</p>"
            "<p><b>Correcting lesions.</b> Open the Segment Editor on the result segmentation and paint with "
            "the default 2-D brush, which paints the slice shown only; the 3-D sphere brush ('Sphere brush') "
            "paints the slices above and below too. Set 'Modify other segments' to 'Allow overlap' so "
            "painting a lesion leaves the lung segments whole, then press 'Update results'.</p>"
            '<p><a href="https://github.com/jcs-diagnosis/SlicerJCSDiagnosis">Documentation</a>.</p>'
        )
        self.parent.acknowledgementText = _(
            "Method: Y.-H. Wu, S.-H. Gao, J. Mei, J. Xu, D.-P. Fan, R.-G. Zhang, M.-M. Cheng, "
            '"JCS: An Explainable COVID-19 Diagnosis System by Joint Classification and Segmentation", '
            "IEEE Transactions on Image Processing 30, 2021."
        )
        slicer.app.connect("startupCompleted()", registerTerminology)


def registerTerminology():
    """Make the lesion/lung codes selectable in the Segment Editor's terminology dialog."""
    from jcs.terminology import TERMINOLOGY_FILE

    terminologies = slicer.util.getModuleLogic("Terminologies")
    if terminologies is not None:
        terminologies.LoadTerminologyFromFile(str(TERMINOLOGY_FILE))


@parameterNodeWrapper
class JCSDiagnosisParameterNode:
    """Parameters of the module, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(Device.values()))] = str(Device.AUTO)
    useCardThreshold: bool = True
    threshold: Annotated[int, Minimum(0)] = 25
    segmentPolicy: Annotated[str, Choice(list(SegmentPolicy.values()))] = str(SegmentPolicy.POSITIVE_ONLY)
    decision: Annotated[str, Choice([AUTO, *DecisionRule.values()])] = AUTO
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    minLesionMl: Annotated[float, Minimum(0.0)] = 0.1
    resultSegmentation: vtkMRMLSegmentationNode


class JCSDiagnosisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: connects the .ui widgets to the parameter node and to JCSDiagnosisLogic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.onPollEngine)
        self._update = None  # a running BackgroundQuantification ("Update results")
        self._shownResultId = None  # the result whose reading the status line shows
        self._updateTimer = qt.QTimer()
        self._updateTimer.setInterval(100)
        self._updateTimer.connect("timeout()", self.onPollUpdate)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/JCSDiagnosis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.progressBar.visible = False
        self.logic = JCSDiagnosisLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.diagnoseButton.connect("clicked(bool)", self.onDiagnoseButton)
        self.ui.updateResultsButton.connect("clicked(bool)", self.onUpdateResults)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.opacityLabel.toolTip = self.ui.opacitySliderWidget.toolTip = _(HEATMAP_LEGEND)
        self.ui.tableSelector.connect("currentIndexChanged(int)", self.onShowTable)
        self.ui.minLesionSpinBox.connect("valueChanged(double)", lambda _value: self.onShowTable())
        self.ui.tableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRun()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRun()
        self._updateTimer.stop()
        self._update = None  # its worker thread ends on its own; its result is dropped
        self._shownResultId = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if volume and not volume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = volume

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _updateGui(self, caller=None, event=None) -> None:
        """Enable actions only when they can run; the tooltip says why not."""
        from JCSDiagnosisLib.engine import inputProblem
        from JCSDiagnosisLib.nodes import isDiagnosisResult

        running = self._run is not None or self._update is not None
        problem = (
            inputProblem(self._parameterNode.inputVolume) if self._parameterNode else _("No parameters.")
        )
        self.ui.diagnoseButton.text = _("Cancel") if self._run is not None else _("Diagnose")
        self.ui.diagnoseButton.enabled = self._run is not None or (problem is None and not running)
        idle = _("Classify every slice, explain and segment lesions.")
        self.ui.diagnoseButton.toolTip = _(problem) if problem else idle
        self.ui.inputProblemLabel.text = _(problem) if problem else ""
        self.ui.inputProblemLabel.visible = bool(problem) and not running
        self.ui.thresholdSpinBox.enabled = (
            not self._parameterNode.useCardThreshold if self._parameterNode else False
        )
        self._showPlannedRule()
        hasResult = bool(self._parameterNode) and isDiagnosisResult(self._parameterNode.resultSegmentation)
        self.ui.updateResultsButton.enabled = hasResult and not running
        self.ui.exportButton.enabled = hasResult and not running
        self.ui.opacitySliderWidget.enabled = hasResult
        self.ui.tableView.setMRMLTableNode(self._currentTable()[1])
        if hasResult and not running:
            self._showReadingOf(self._parameterNode.resultSegmentation)

    def _showPlannedRule(self) -> None:
        """Name the decision rule the loaded weights' card makes count, before Diagnose (read again only
        when the CT, the rule choice or the threshold change)."""
        from JCSDiagnosisLib.reading import plannedRule

        parameters = self._parameterNode
        if parameters is None:
            return
        threshold = None if parameters.useCardThreshold else parameters.threshold
        volume = parameters.inputVolume
        key = (volume.GetID() if volume else None, parameters.decision, threshold)
        if key == getattr(self, "_ruleKey", None):
            return
        self._ruleKey = key
        rule = plannedRule(volume, decision=parameters.decision, threshold=threshold)
        if rule is None:
            self.ui.ruleLabel.text = _("The decision rule is named when the weights load.")
            return
        self.ui.ruleLabel.text = _(rule.explanation())
        if rule.why():
            self.ui.ruleLabel.toolTip = _(rule.why())

    def _showReadingOf(self, segmentationNode) -> None:
        """Put a result's reading in the status line when another result is selected (or after a
        scene is loaded): the engine's decision and notes are kept on the segmentation."""
        if segmentationNode.GetID() == self._shownResultId:
            return
        self._shownResultId = segmentationNode.GetID()
        nodes = self.logic.sceneLogic.resultNodes(segmentationNode)
        self.ui.statusLabel.text = self.logic.decisionText(nodes)

    # ------------------------------------------------------------------ actions
    def onDiagnoseButton(self) -> None:
        if self._run is not None:
            self.cancelRun()
            return
        with slicer.util.tryWithErrorDisplay(_("Diagnosis could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            parameters = self._parameterNode
            self._run = self.logic.sceneLogic.startDiagnosis(
                parameters.inputVolume,
                device=parameters.device,
                threshold=None if parameters.useCardThreshold else parameters.threshold,
                segment_policy=parameters.segmentPolicy,
                decision=parameters.decision,
            )
            self.ui.progressBar.value = 0
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = _("Starting the engine...")
            self._timer.start()
            self._updateGui()

    def onPollEngine(self) -> None:
        """GUI timer: show progress, load the results when the engine is done."""
        run = self._run
        if run is None:
            self._timer.stop()
            return
        self.ui.progressBar.value = int(100 * run.process.fraction)
        if run.process.stage:  # the engine's stage name (classify, segment, quantify, ...)
            self.ui.statusLabel.text = _(run.process.stage)
        code = run.process.poll()
        if code is None:
            return
        self._timer.stop()
        self._run = None
        self.ui.progressBar.visible = False
        try:
            if run.process.cancelled:
                self.ui.statusLabel.text = _("Cancelled.")
                return
            with slicer.util.tryWithErrorDisplay(_("Diagnosis failed."), waitCursor=True):
                run.process.check(code)
                nodes = self.logic.sceneLogic.loadResults(run)
                self._shownResultId = nodes.segmentationNode.GetID()
                self._parameterNode.resultSegmentation = nodes.segmentationNode
                self.logic.showResults(nodes, self._parameterNode.heatmapOpacity, self.onPlotDataSelected)
                self.ui.statusLabel.text = self.logic.decisionText(nodes)
                self.onShowTable()
        finally:
            shutil.rmtree(run.workDir, ignore_errors=True)
            self._updateGui()

    def cancelRun(self) -> None:
        if self._run is None:
            return
        self._run.process.cancel()  # the timer sees the ended process and cleans up

    def onUpdateResults(self) -> None:
        """Recompute the tables from the edited segmentation; the quantification runs in a worker
        thread (polled by a timer), so the GUI stays responsive on large scans."""
        if self._update is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Results could not be updated."), waitCursor=True):
            self._update = self.logic.sceneLogic.startUpdateResults(self._parameterNode.resultSegmentation)
            self.ui.statusLabel.text = _("Recomputing results...")
            self._updateTimer.start()
        self._updateGui()

    def onPollUpdate(self) -> None:
        task = self._update
        if task is not None and not task.done:
            return
        self._updateTimer.stop()
        self._update = None
        if task is None:
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Results could not be updated.")):
                nodes = self.logic.sceneLogic.finishUpdateResults(task)
                self.ui.statusLabel.text = _("Results updated.") + "\n" + self.logic.decisionText(nodes)
                self.onShowTable()
        finally:
            self._updateGui()

    def onExport(self) -> None:
        outputDir = qt.QFileDialog.getExistingDirectory(None, _("Folder for the DICOM-SEG and SR files"))
        if not outputDir:
            return
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            try:
                files = self.logic.sceneLogic.exportDicomSeg(
                    self._parameterNode.resultSegmentation, outputDir
                )
            except ValueError as exc:
                if "was not loaded from DICOM" not in str(exc):
                    raise
                sourceDir = qt.QFileDialog.getExistingDirectory(
                    None, _("Folder of the source CT DICOM series")
                )
                if not sourceDir:
                    return
                files = self.logic.sceneLogic.exportDicomSeg(
                    self._parameterNode.resultSegmentation, outputDir, sourceDicomDir=sourceDir
                )
            slicer.util.infoDisplay(_("Written:\n{seg}\n{sr}").format(seg=files.seg_path, sr=files.sr_path))

    def onOpacityChanged(self, value: float) -> None:
        if self.logic is not None:
            self.logic.sceneLogic.setHeatmapOpacity(value)

    def _currentTable(self):
        from JCSDiagnosisLib.nodes import isDiagnosisResult

        segmentation = self._parameterNode.resultSegmentation if self._parameterNode else None
        if not isDiagnosisResult(segmentation):
            return None, None
        nodes = self.logic.sceneLogic.resultNodes(segmentation)
        kind = ("summary", "lesions", "slices")[max(self.ui.tableSelector.currentIndex, 0)]
        table = {
            "summary": nodes.summaryTableNode,
            "lesions": nodes.lesionTableNode,
            "slices": nodes.sliceTableNode,
        }[kind]
        return kind, table

    def onShowTable(self, index: int = 0) -> None:
        """Show the chosen table as a reader needs it: the summary without its field names and exact
        values (kept in the node), lesions under the minimum size hidden."""
        from JCSDiagnosisLib.reading import lesionRowsShown

        kind, table = self._currentTable()
        view = self.ui.tableView
        view.setMRMLTableNode(table)
        if table is None:
            return
        names = [table.GetTable().GetColumnName(c) for c in range(table.GetNumberOfColumns())]
        for column, name in enumerate(names):
            view.setColumnHidden(column, kind == "summary" and name in ("quantity", "value"))
        shown = set(lesionRowsShown(table, self._parameterNode.minLesionMl)) if kind == "lesions" else None
        for row in range(table.GetNumberOfRows()):
            view.setRowHidden(row, shown is not None and row not in shown)

    def onTableClicked(self, modelIndex) -> None:
        """Click a lesion row to centre on the lesion, a slice row to show that slice."""
        kind, _table = self._currentTable()
        row = modelIndex.row()
        with slicer.util.tryWithErrorDisplay(_("Cannot jump to this row."), waitCursor=False):
            if kind == "lesions":
                self.logic.sceneLogic.jumpToLesion(self._parameterNode.resultSegmentation, row)
            elif kind == "slices":
                self.logic.jumpToSliceRow(self._parameterNode.resultSegmentation, row)

    def onPlotDataSelected(self, selectedSeriesIds, pointIdLists) -> None:
        """Click a point of the probability plot to show that slice."""
        for index in range(pointIdLists.GetNumberOfItems()):
            ids = pointIdLists.GetItemAsObject(index)
            if ids is not None and ids.GetNumberOfTuples() > 0:
                self.logic.jumpToSliceRow(self._parameterNode.resultSegmentation, int(ids.GetValue(0)))
                return


class JCSDiagnosisLogic(ScriptedLoadableModuleLogic):
    """Slicer-side logic: dependencies and views; the scene work is JCSDiagnosisSceneLogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from JCSDiagnosisLib.logic import JCSDiagnosisSceneLogic

        self.sceneLogic = JCSDiagnosisSceneLogic(slicer.app.applicationLogic())
        self.sceneLogic.dicomFileForInstance = _dicomFileForInstance

    def getParameterNode(self):
        return JCSDiagnosisParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> bool:
        """torch via PyTorchUtils, then missing packages; asks before installing anything."""
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise RuntimeError(
                _(
                    "This module needs the PyTorch extension. Install it from the Extensions "
                    "Manager and restart Slicer."
                )
            ) from exc
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if not slicer.util.confirmOkCancelDisplay(
                _("PyTorch is not installed yet. Install it now (download of about 1 GB)?")
            ):
                return False
            if (
                torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}")
                is None
            ):
                raise RuntimeError(_("PyTorch could not be installed. See the Python console for details."))
        from packaging.version import Version

        if Version(metadata.version("torch").split("+")[0]) < Version(MINIMUM_TORCH):
            raise RuntimeError(
                _(
                    "PyTorch {found} is too old; {minimum} or later is needed. Update it in the "
                    "PyTorch module and restart Slicer."
                ).format(found=metadata.version("torch"), minimum=MINIMUM_TORCH)
            )
        missing = [requirement for module, requirement in REQUIREMENTS if find_spec(module) is None]
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
            _("JCS Diagnosis needs these Python packages: {packages}. Install them now?").format(
                packages=", ".join(missing)
            )
        ):
            return False
        with tempfile.TemporaryDirectory() as folder:
            constraints = Path(folder) / "constraints.txt"
            pins = []
            for name in PROTECTED:
                try:
                    pins.append(f"{name}=={metadata.version(name)}")
                except metadata.PackageNotFoundError:
                    continue
            constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
            for requirement in missing:
                slicer.util.pip_install([requirement, "-c", str(constraints)])
        return True

    def showResults(self, nodes, opacity: float, onPlotDataSelected=None) -> None:
        """Heatmap over the CT, probability plot in the layout; plot clicks call `onPlotDataSelected`."""
        from JCSDiagnosisLib import display

        display.showHeatmap(nodes.volumeNode, nodes.heatmapNode, opacity)
        display.showSegments3D(nodes.segmentationNode, lungs=True)
        slicer.modules.plots.logic().ShowChartInLayout(nodes.plotChartNode)
        layoutManager = slicer.app.layoutManager()
        if onPlotDataSelected and layoutManager is not None and layoutManager.plotWidget(0) is not None:
            plotView = layoutManager.plotWidget(0).plotView()
            signal = "dataSelected(vtkStringArray*, vtkCollection*)"
            plotView.disconnect(signal, onPlotDataSelected)
            plotView.connect(signal, onPlotDataSelected)
        slicer.util.resetSliceViews()

    def jumpToSliceRow(self, segmentationNode, row: int) -> None:
        from JCSDiagnosisLib import tables

        nodes = self.sceneLogic.resultNodes(segmentationNode)
        sliceIndex = int(tables.columnValues(nodes.sliceTableNode, tables.SLICE_COLUMN)[row])
        self.sceneLogic.jumpToSlice(nodes.volumeNode, sliceIndex)

    @staticmethod
    def decisionText(nodes) -> str:
        """The AI reading (engine's case), how its slices were counted and, after an edit under the
        segmenter rule, what that rule says of the edited segmentation."""
        from JCSDiagnosisLib.reading import readingLines

        lines = readingLines(nodes.results)
        if not lines:
            return _("Done.")
        return "\n".join([*(_(line) for line in lines), _("Not for clinical use.")])


def _dicomFileForInstance(uid: str) -> str:
    return slicer.dicomDatabase.fileForInstance(uid) if slicer.dicomDatabase else ""


class JCSDiagnosisTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the radiologist flow with the bundled weights (no network)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_DiagnoseEditUpdate()
        self.setUp()
        self.test_DiagnoseSampleAndExport()

    def test_DiagnoseEditUpdate(self) -> None:
        import numpy as np
        from JCSDiagnosisLib import tables, volumes
        from JCSDiagnosisLib.engine import inputProblem

        self.delayDisplay(_("Building a synthetic chest CT"))
        volumeNode = _syntheticChest()
        logic = JCSDiagnosisLogic()
        self.assertTrue(logic.ensureDependencies())
        self.assertIsNone(inputProblem(volumeNode))

        self.delayDisplay(_("Diagnosing (engine in a background process)"))
        nodes = logic.sceneLogic.diagnose(volumeNode, device="cpu", segment_policy="always")
        heatmapMatrix = volumes.ijkToRasMatrix(nodes.heatmapNode)
        self.assertTrue(np.allclose(heatmapMatrix, volumes.ijkToRasMatrix(volumeNode)))
        heat = volumes.arrayFromVolume(nodes.heatmapNode)
        self.assertGreaterEqual(heat.min(), 0.0)
        self.assertLessEqual(heat.max(), 1.0)
        self.assertEqual(nodes.sliceTableNode.GetNumberOfRows(), volumeNode.GetImageData().GetDimensions()[2])
        logic.showResults(nodes, 0.4)

        self.delayDisplay(_("Painting a lesion block and updating the results"))
        mask = np.zeros_like(logic.sceneLogic.lesionMask(nodes.segmentationNode))
        mask[8:12, 44:52, 24:32] = 1  # 256 voxels inside the right lung, away from the opacity
        volumes.setSegmentArray(nodes.segmentationNode, "lesion", mask, volumeNode)
        logic.sceneLogic.updateResults(nodes.segmentationNode)
        self.assertTrue(logic.sceneLogic.isEdited(nodes.segmentationNode))
        voxelMl = float(np.prod(volumeNode.GetSpacing())) / 1000.0
        summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
        self.assertAlmostEqual(float(summary["opacification_volume_ml"]), 256 * voxelMl, places=3)
        self.assertEqual(summary["lesion_count"], "1")
        # the bundled weights decide by the segmenter rule, which is read again on the edit
        engine = logic.sceneLogic.engineReading(nodes.segmentationNode).case
        self.assertEqual(engine.decision, "segmenter")
        shares = tables.columnValues(nodes.sliceTableNode, "opacified_lung_fraction")
        counted = sum(share > engine.min_lung_fraction for share in shares)
        self.assertEqual(int(summary["current_positive_slice_count"]), counted)
        self.assertEqual(summary["current_positive"], "yes" if counted > engine.threshold else "no")
        self.delayDisplay(_("Test passed"))

    def test_DiagnoseSampleAndExport(self) -> None:
        import highdicom as hd
        from JCSDiagnosisLib.process import ENGINE_PARENT

        sampleDir = ENGINE_PARENT / "jcs" / "sample" / "P001"
        files = sorted(sampleDir.glob("*.dcm"))
        self.assertTrue(files, f"bundled demo CT missing in {sampleDir}")
        self.delayDisplay(_("Loading the bundled demo CT"))
        volumeNode = slicer.util.loadVolume(str(files[0]), {"singleFile": False})
        logic = JCSDiagnosisLogic()
        self.assertTrue(logic.ensureDependencies())
        nodes = logic.sceneLogic.diagnose(volumeNode, device="auto", segment_policy="always")
        self.delayDisplay(_("Exporting DICOM-SEG and SR"))
        outputDir = Path(slicer.app.temporaryPath) / "JCSDiagnosisTest"
        exported = logic.sceneLogic.exportDicomSeg(
            nodes.segmentationNode, outputDir, sourceDicomDir=sampleDir
        )
        segmentation = hd.seg.segread(exported.seg_path)
        self.assertEqual(segmentation.SegmentSequence[0].SegmentAlgorithmType, "AUTOMATIC")
        self.assertTrue(exported.sr_path.is_file())
        self.delayDisplay(_("Test passed"))


def _syntheticChest():
    """A 40x96x96 chest-like CT (body, two lungs, one opacity) as a volume node (LPS-axial grid)."""
    import numpy as np
    from JCSDiagnosisLib import volumes

    z, y, x = np.mgrid[:40, :96, :96]
    hu = np.full((40, 96, 96), -1000.0)
    hu[((y - 48) / 40) ** 2 + ((x - 48) / 46) ** 2 <= 1] = 40.0
    for cx in (28, 68):
        hu[((y - 48) / 28) ** 2 + ((x - cx) / 15) ** 2 + ((z - 20) / 19) ** 2 <= 1] = -850.0
    hu[((y - 48) / 6) ** 2 + ((x - 28) / 6) ** 2 + ((z - 20) / 4) ** 2 <= 1] = -400.0
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "JCS synthetic chest")
    matrix = np.diag([-1.5, -1.5, 2.5, 1.0])
    volumes.setVolumeArray(node, hu.astype(np.int16), matrix)
    node.CreateDefaultDisplayNodes()
    return node
