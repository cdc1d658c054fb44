"""FemurScreen: opportunistic osteoporosis screening on abdominal/pelvic CT in 3D Slicer.

This file holds what Slicer needs to show the module: its description, the Qt widget and the
self-test. The widget is thin: it wires the panel built from ``Resources/UI/FemurScreen.ui``
to :class:`FemurScreenLib.logic.FemurScreenLogic`, which does every computation without Qt.
"""

import html
import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from FemurScreenLib import ReloadsPackages
from FemurScreenLib.logic import (
    ENGINE_CHOICES,
    FemurScreenLogic,
    PanelState,
    density_text,
    flag_words,
    quality_text,
)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEMO_WARNING = _(
    "The bone-status model shipped with FemurScreen is a DEMO model trained on synthetic "
    "phantoms only. Its probabilities demonstrate the workflow and must not be used for any "
    "clinical decision."
)
SAMPLE_CATEGORY = "FemurScreen"
SAMPLES = (
    # sample name, file in Resources/SampleData, thumbnail in Resources/Icons
    ("FemurScreenCT", "totalseg_example_ct.nii.gz", "FemurScreenCT.png"),
    ("FemurScreenPhantom", "femurscreen_phantom_ct.nii.gz", "FemurScreenPhantom.png"),
)
CLASS_COLORS = {"normal": "#2e8b57", "osteopenia": "#d08c00", "osteoporosis": "#c0392b"}


#
# FemurScreen
#


class FemurScreen(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FemurScreen")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = ["Segmentations", "SampleData"]
        self.parent.contributors = ["FemurScreen developers"]
        self.parent.helpText = (
            _(
                "Screen an abdominal or pelvic CT for osteoporosis: segment the proximal femurs, "
                "check and correct them in the embedded Segment Editor, and read the bone status "
                "(normal / osteopenia / osteoporosis) of each side with its probabilities, beside "
                "a calibrated-density T-score (a CT-derived estimate, not a DXA). A CT loaded "
                "from the DICOM database can be exported as DICOM SEG + SR into its study. "
                "See the <a href='https://github.com/femurscreen/SlicerFemurScreen#readme'>"
                "documentation</a>.<br><br><b>Warning:</b> "
            )
            + DEMO_WARNING
        )
        self.parent.acknowledgementText = _(
            "FemurScreen uses pyradiomics (van Griethuysen et al., Cancer Research 2017) and "
            "SimpleITK. The sample CT comes from the TotalSegmentator example data "
            "(Wasserthal et al., Radiology: AI 2023; Apache-2.0)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer the shipped CTs in the Sample Data module.

    The sources are local ``file:`` URIs (made the way SampleData's own tests make them):
    SampleData "downloads" them with urllib into its cache, checks the SHA256 and loads them.
    """
    import urllib.parse
    import urllib.request

    import SampleData

    module_dir = os.path.dirname(__file__)
    for name, file_name, thumbnail in SAMPLES:
        path = os.path.join(module_dir, "Resources", "SampleData", file_name)
        if not os.path.exists(path):
            continue
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY,
            sampleName=name,
            thumbnailFileName=os.path.join(module_dir, "Resources", "Icons", thumbnail),
            uris=urllib.parse.urljoin("file:", urllib.request.pathname2url(path)),
            fileNames=file_name,
            nodeNames=name,
            checksums="SHA256:" + slicer.util.computeChecksum("SHA256", path),
        )


#
# Parameter node
#


@parameterNodeWrapper
class FemurScreenParameterNode:
    """What the user chose; saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    engine: Annotated[str, Choice(list(ENGINE_CHOICES))] = ENGINE_CHOICES[0]
    segmentLeft: bool = True
    segmentRight: bool = True
    autoRecompute: bool = True
    checkQuality: bool = True  # the segmentation quality signal (a second engine's opinion)


#
# FemurScreenWidget
#


class FemurScreenWidget(ReloadsPackages, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: wiring only; every computation is in ``FemurScreenLogic``."""

    POLL_MS = 300
    RECOMPUTE_DELAY_MS = 1000
    SEGMENTATION_EVENTS = (
        slicer.vtkSegmentation.SourceRepresentationModified,
        slicer.vtkSegmentation.SegmentAdded,
        slicer.vtkSegmentation.SegmentRemoved,
        slicer.vtkSegmentation.SegmentModified,
    )

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.state = None  # PanelState: jobs and result, consistent after any error
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._writingSegments = False
        self._effectFactory = None
        self.qualityCheckBox = None
        self._qualityGuiTag = None

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FemurScreen.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.logic = FemurScreenLogic()
        self.state = PanelState(self.logic)

        # The editor node must exist before the editor gets the scene (as the Segment Editor
        # module does), so that its automatic selections are stored in it.
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segment_editor_node())
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.probabilityPlotWidget.setMRMLPlotViewNode(self.logic.plot_view_node())
        self.ui.progressBar.hide()
        self._addQualityCheckBox()
        # Effects registered after this panel was built (other extensions, startup order)
        # appear in the embedded editor too, as the Segment Editor module does it.
        self._effectFactory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        self._effectFactory.connect("effectRegistered(QString)", self.onEffectRegistered)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_MS)
        self._pollTimer.connect("timeout()", self.onPollJob)
        self._recomputeTimer = qt.QTimer()
        self._recomputeTimer.setSingleShot(True)
        self._recomputeTimer.setInterval(self.RECOMPUTE_DELAY_MS)
        self._recomputeTimer.connect("timeout()", self.onAutoRecompute)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecompute)
        self.ui.exportSegmentationButton.connect("clicked(bool)", self.onExportSegmentation)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.exportJsonButton.connect("clicked(bool)", self.onExportJson)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.outputSegmentationSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self.onSegmentationSelected
        )
        self.ui.inputVolumeSelector.connect(
            "currentNodeChanged(vtkMRMLNode*)", self.onVolumeSelected
        )

        if not self.logic.report_available():
            self.ui.exportReportButton.toolTip = _(
                "The HTML report needs femurscreen.output.report, which this installation lacks."
            )
        self._updateModelBanner()
        self.initializeParameterNode()

    def _addQualityCheckBox(self) -> None:
        """The opt-out of the segmentation quality signal, in the segmentation form below the
        engine (made here, not in the .ui; bound to ``checkQuality`` in setParameterNode)."""
        box = qt.QCheckBox(_("Check the masks with a second engine"))
        box.checked = True
        box.toolTip = _(
            "After segmenting, segment again with the other engine and show how well the two "
            "masks agree (Dice) beside each side's result; below 0.85 the side is flagged "
            "'review segmentation'. Costs one more segmentation (a few seconds). Without "
            "PyTorch the VB-Net cannot give its opinion: the panel then says so."
        )
        self.qualityCheckBox = box
        form = self.ui.engineComboBox.parentWidget().layout()  # the .ui's inputsFormLayout
        try:  # the row above the Segment button (which spans both columns)
            row = next(
                r
                for r in range(form.rowCount())
                if (item := form.itemAt(r, qt.QFormLayout.SpanningRole)) is not None
                and item.widget() == self.ui.segmentButton
            )
            form.insertRow(row, "", box)
        except Exception:  # another layout than the .ui's form: at its end
            form.addWidget(box)

    def onEffectRegistered(self, name=None) -> None:
        self.ui.segmentEditorWidget.updateEffectList()

    def _updateModelBanner(self) -> None:
        try:
            summary = self.logic.model_summary()
        except Exception as exc:  # the model or its packages are not installed yet
            self.ui.demoBannerLabel.text = _(
                "Bone-status model not available yet: {reason}"
            ).format(reason=exc)
            self.ui.demoBannerLabel.visible = True
            return
        self.ui.demoBannerLabel.visible = summary["demo"]
        if summary["demo"]:
            self.ui.demoBannerLabel.text = summary["demo_notice"] or DEMO_WARNING

    def cleanup(self) -> None:
        if self.state is not None:
            self.state.clear()
        if self._effectFactory is not None:
            self._effectFactory.disconnect("effectRegistered(QString)", self.onEffectRegistered)
            self._effectFactory = None
        self._pollTimer.stop()
        self._recomputeTimer.stop()
        self.removeObservers()

    # ------------------------------------------------------------------ parameter node

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            if self._qualityGuiTag is not None:
                self._parameterNode.disconnectGui(self._qualityGuiTag)
                self._qualityGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons
            )

    def onSceneStartClose(self, caller, event) -> None:
        self.state.clear()
        self._pollTimer.stop()
        self.ui.progressBar.hide()
        self.setParameterNode(None)
        self._observeSegmentation(None)
        self._showResult(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(FemurScreenParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons
            )
        if self._parameterNode and self._qualityGuiTag is not None:
            self._parameterNode.disconnectGui(self._qualityGuiTag)
            self._qualityGuiTag = None
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            if self.qualityCheckBox is not None:
                self._qualityGuiTag = self._parameterNode.connectParametersToGui(
                    {"checkQuality": self.qualityCheckBox}
                )
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        volume = bool(p and p.inputVolume)
        segmentation = bool(p and p.outputSegmentation)
        sides = bool(p and (p.segmentLeft or p.segmentRight))
        dicom = volume and self.logic.loaded_from_dicom(p.inputVolume)
        c = self.state.controls(volume=volume, segmentation=segmentation, sides=sides, dicom=dicom)
        self.ui.segmentButton.text = _("Cancel") if c.segment_text == "Cancel" else _("Segment")
        self.ui.segmentButton.enabled = c.segment_enabled
        self.ui.segmentButton.toolTip = (
            _("Stop the running segmentation")
            if self.state.segmenting
            else _("Select a CT volume and at least one side")
            if not (volume and sides)
            else _("Segment the proximal femurs into a new segmentation")
        )
        self.ui.recomputeButton.text = (
            _("Cancel") if c.recompute_text == "Cancel" else _("Recompute")
        )
        self.ui.recomputeButton.enabled = c.recompute_enabled
        self.ui.exportSegmentationButton.enabled = c.export_segmentation_enabled
        self.ui.exportCsvButton.enabled = c.export_result_enabled
        self.ui.exportJsonButton.enabled = c.export_result_enabled
        self.ui.exportReportButton.enabled = (
            c.export_result_enabled and self.logic.report_available()
        )
        self.ui.exportDicomButton.enabled = c.export_dicom_enabled
        self.ui.exportDicomButton.toolTip = (
            _("Write DICOM SEG + SR (and the report as a secondary capture) into a folder")
            if c.export_dicom_enabled
            else _("Needs a CT loaded from the DICOM database and a current result")
        )
        self.ui.progressBar.visible = c.busy

    def onVolumeSelected(self, node) -> None:
        # The editor's source volume is set once there is a segmentation to edit (setting it
        # without one only writes errors to the log).
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode else None
        if node is not None and segmentation is not None:
            self.ui.segmentEditorWidget.setSourceVolumeNode(node)

    def onSegmentationSelected(self, node) -> None:
        self.ui.segmentEditorWidget.setSegmentationNode(node)
        volume = self._parameterNode.inputVolume if self._parameterNode else None
        if node is not None and volume is not None:
            self.ui.segmentEditorWidget.setSourceVolumeNode(volume)
        self._observeSegmentation(node)
        self.state.cancel_grading()
        self._showResult(None)
        # A segmentation from a saved scene or another run: show its results again.
        if not self.state.segmenting and self.logic.has_femur_segments(node):
            self.onSegmentsChanged()

    # ------------------------------------------------------------------ segmentation

    def addLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(text)

    def onSegmentButton(self) -> None:
        if self.state.segmenting:
            self.state.cancel_segmentation()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        p = self._parameterNode
        sides = [s for s, on in (("left", p.segmentLeft), ("right", p.segmentRight)) if on]
        if not self._ensureDependencies(p.engine, "segment"):
            return
        target = self._targetSegmentation(p.outputSegmentation)
        self._recomputeTimer.stop()
        error = self.state.start_segmentation(
            p.inputVolume, p.engine, sides, target, quality=p.checkQuality
        )
        if error:
            self.ui.statusLabel.text = _("Could not start the segmentation.")
            slicer.util.errorDisplay(_("Could not start the segmentation.") + "\n\n" + error)
        else:
            self.ui.logTextEdit.clear()
            self.addLog(" ".join(self.state.segmentation_job.process.args))
            self.ui.progressBar.setRange(0, 0)  # busy until the process reports a percentage
            self.ui.statusLabel.text = _("Segmenting...")
            self._pollTimer.start()
        self._updateButtons()

    def _targetSegmentation(self, node):
        """The node to overwrite, or None for a new one: never an edited node unless asked."""
        if not self.logic.made_by_femurscreen(node):
            return None
        if not self.logic.is_edited(node):
            return node
        replace = slicer.util.confirmYesNoDisplay(
            _(
                "'{name}' was edited since FemurScreen created it. Replace its segments "
                "with the new result?\n\nNo: keep it and write the result into a new "
                "segmentation."
            ).format(name=node.GetName()),
            windowTitle=_("Edited segmentation"),
        )
        return node if replace else None

    def onPollJob(self) -> None:
        job = self.state.job
        if job is None:
            self._pollTimer.stop()
            self._updateButtons()
            return
        for line in job.poll():
            if line.strip():
                self.addLog(line)
        if job.message:
            self.ui.statusLabel.text = job.message
        if job.progress > 0:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = int(round(100 * job.progress))
        if not job.finished:
            return
        if job is self.state.segmentation_job:
            self._segmentationFinished(job)
        else:
            self._gradingFinished(job)
        if self.state.job is None:
            self._pollTimer.stop()
        self._updateButtons()

    def _segmentationFinished(self, job) -> None:
        self._writingSegments = True
        try:
            outcome = self.state.finish_segmentation()  # never raises; the job is cleared
        finally:
            self._writingSegments = False
        if outcome.cancelled:
            self.ui.statusLabel.text = _("Segmentation cancelled.")
            return
        if outcome.error:
            self.ui.statusLabel.text = _("Segmentation failed; see the log.")
            self.addLog(outcome.error)
            slicer.util.errorDisplay(_("Segmentation failed.") + "\n\n" + outcome.error)
            return
        node = outcome.node
        self.ui.statusLabel.text = _(
            "Segmented in {seconds:.0f} s. Check the segments, correct them if needed."
        ).format(seconds=job.seconds)
        model = self.logic.segmentation_info(node).get("model") or {}
        if model.get("demo"):  # demo segmentation weights are labelled where they are used
            self.ui.statusLabel.text += " " + (model.get("demo_notice") or _("DEMO weights."))
        self._parameterNode.outputSegmentation = node
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=True)
        self._recomputeTimer.stop()
        self._startGrading()

    def _gradingFinished(self, job) -> None:
        outcome = self.state.finish_grading()  # never raises; a failure clears the result
        if outcome.cancelled:
            self.ui.statusLabel.text = _("Bone status computation cancelled.")
        elif outcome.error:
            self.ui.statusLabel.text = _("Could not compute the bone status; see the log.")
            self.addLog(outcome.error)
            slicer.util.errorDisplay(
                _("Could not compute the bone status.") + "\n\n" + outcome.error
            )
        else:
            self.ui.statusLabel.text = _("Bone status computed in {seconds:.1f} s.").format(
                seconds=job.seconds
            )
        self._showResult(outcome.result)

    def _ensureDependencies(self, engine: str, stage: str, automatic: bool = False) -> bool:
        """Offer to install what ``stage`` ("segment", "grade" or "export") needs.

        ``automatic`` (the recompute after an edit): never a dialog there, only the status line
        saying what to press; a dialog after every brush stroke would make editing impossible.
        """
        from FemurScreenLib import dependencies

        needed = self.logic.missing_packages(engine, stage)
        if not needed:
            return True
        if automatic:
            names = ", ".join(dict.fromkeys(str(m.requirement) for m in needed))
            self.ui.statusLabel.text = _(
                "Python packages missing ({names}): press Recompute to install them."
            ).format(names=names)
            return False
        waiting = []

        def confirm(text, details):
            # Asked with the normal cursor; the wait cursor only while pip runs.
            ok = slicer.util.confirmOkCancelDisplay(
                text, _("Install Python packages"), detailedText=details
            )
            if ok:
                slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
                waiting.append(True)
            return ok

        try:
            restart = dependencies.install(needed, confirm=confirm, log_message=self.addLog)
        except dependencies.InstallError as exc:
            if waiting:
                slicer.app.restoreOverrideCursor()
                waiting.clear()
            slicer.util.errorDisplay(
                _("Required Python packages are missing: {error}").format(error=exc)
            )
            if exc.restart and slicer.util.confirmOkCancelDisplay(
                _("Restart Slicer to finish the installation?")
            ):
                slicer.util.restart()
            return False
        finally:
            if waiting:
                slicer.app.restoreOverrideCursor()
        if restart and slicer.util.confirmOkCancelDisplay(
            _("Packages were upgraded. Restart Slicer now so that the new versions are used?")
        ):
            slicer.util.restart()
        self._updateModelBanner()
        return True

    # ------------------------------------------------------------------ features and classes

    def _observeSegmentation(self, node) -> None:
        if self._observedSegmentation is not None:
            for event in self.SEGMENTATION_EVENTS:
                self.removeObserver(self._observedSegmentation, event, self.onSegmentsChanged)
        self._observedSegmentation = node.GetSegmentation() if node is not None else None
        if self._observedSegmentation is not None:
            for event in self.SEGMENTATION_EVENTS:
                self.addObserver(self._observedSegmentation, event, self.onSegmentsChanged)

    def onSegmentsChanged(self, caller=None, event=None) -> None:
        if self._writingSegments or self.state.segmenting:
            return
        if self._parameterNode and self._parameterNode.autoRecompute:
            self._recomputeTimer.start()  # restarts: computes 1 s after the last edit

    def onAutoRecompute(self) -> None:
        if self._parameterNode and self._parameterNode.autoRecompute:
            self._startGrading(automatic=True)

    def onRecompute(self) -> None:
        if self.state.grading:  # the button says "Cancel" while a grading runs
            self.state.cancel_grading()
            self.ui.statusLabel.text = _("Bone status computation cancelled.")
            self._showResult(None)
            return
        self._startGrading()

    def _startGrading(self, automatic: bool = False) -> None:
        """Features and classification in a background process (the panel stays usable);
        ``automatic``: started by an edit, not a button (no installation dialog)."""
        p = self._parameterNode
        if not (p and p.inputVolume and p.outputSegmentation) or self.state.segmenting:
            return
        if not self._ensureDependencies(p.engine, "grade", automatic):
            self.state.cancel_grading()
            self._showResult(None)
            return
        error = self.state.start_grading(p.inputVolume, p.outputSegmentation, p.engine)
        if error:
            self.ui.statusLabel.text = _("Could not compute the bone status.")
            self.addLog(error)
            slicer.util.errorDisplay(_("Could not compute the bone status.") + "\n\n" + error)
            self._showResult(None)
            return
        self.ui.progressBar.setRange(0, 0)
        self.ui.statusLabel.text = _("Computing the bone status...")
        self._pollTimer.start()
        self._updateButtons()

    def _showResult(self, result) -> None:
        if result is None:
            self.state.forget_result()
            self.ui.leftResultLabel.text = _("Left femur: -")
            self.ui.rightResultLabel.text = _("Right femur: -")
            self.ui.resultsTableView.setMRMLTableNode(None)
            self.ui.featuresTableView.setMRMLTableNode(None)
            self._updateButtons()
            return
        for side, label in (("left", self.ui.leftResultLabel), ("right", self.ui.rightResultLabel)):
            label.text = self._sideText(side, result.result.get(side) or {})
            density = density_text(side, result.result)  # recomputed with every grading
            if density:
                label.text += "<br>" + html.escape(density)
            check = quality_text(side, result.result)  # "edited" once a person changed it
            if check:
                low = "review_segmentation" in (result.result.get(side) or {}).get("flags", [])
                escaped = html.escape(check)
                label.text += "<br>" + (
                    f"<b style='color:#b06000'>{escaped}</b>" if low else escaped
                )
        self.ui.resultsTableView.setMRMLTableNode(result.results_table)
        self.ui.featuresTableView.setMRMLTableNode(result.features_table)
        self.ui.probabilityPlotWidget.mrmlPlotViewNode().SetPlotChartNodeID(result.chart.GetID())
        self.ui.demoBannerLabel.visible = result.demo
        if result.overlap_voxels:
            self.addLog(
                _("{n} voxels belonged to both sides and were left out.").format(
                    n=result.overlap_voxels
                )
            )
        self._updateButtons()

    @staticmethod
    def _sideText(side: str, info: dict) -> str:
        title = _("Left femur") if side == "left" else _("Right femur")
        # review_segmentation: the mask-check line below says it, with the number
        shown = [f for f in info.get("flags") or [] if f != "review_segmentation"]
        flags = "; ".join(flag_words(shown))
        if info.get("graded"):
            predicted = info.get("predicted") or ""
            p = (info.get("probabilities") or {}).get(predicted)
            color = CLASS_COLORS.get(predicted, "#000000")
            text = f"<b>{title}: <span style='color:{color}'>{predicted}</span></b>"
            if p is not None:
                text += f" (p = {p:.2f})"
        else:
            text = (
                f"<b>{title}:</b> "
                + _("not graded")
                + f" - {info.get('reason') or info.get('status') or ''}"
            )
        if flags:
            text += "<br><i>" + _("flags: ") + flags + "</i>"
        return text

    # ------------------------------------------------------------------ export

    def _savePath(self, title: str, suggested: str, filters: str):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), title, suggested, filters)
        return path or None

    def _suggest(self, suffix: str) -> str:
        node = self._parameterNode.outputSegmentation
        name = node.GetName() if node else "femurscreen"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return os.path.join(slicer.app.defaultScenePath, safe + suffix)

    def onExportSegmentation(self) -> None:
        path = self._savePath(
            _("Save segmentation"), self._suggest(".seg.nrrd"), "Segmentation (*.seg.nrrd)"
        )
        if path:
            with slicer.util.tryWithErrorDisplay(
                _("Could not save the segmentation."), waitCursor=True
            ):
                self.addLog(
                    _("Saved {path}").format(
                        path=self.logic.export_segmentation(
                            self._parameterNode.outputSegmentation, path
                        )
                    )
                )

    def onExportCsv(self) -> None:
        path = self._savePath(_("Save table"), self._suggest(".csv"), "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not save the table."), waitCursor=True):
                self.addLog(
                    _("Saved {path}").format(path=self.logic.export_csv(self.state.result, path))
                )

    def onExportJson(self) -> None:
        path = self._savePath(_("Save result"), self._suggest(".json"), "JSON (*.json)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not save the result."), waitCursor=True):
                self.addLog(
                    _("Saved {path}").format(path=self.logic.export_json(self.state.result, path))
                )

    def onExportReport(self) -> None:
        path = self._savePath(_("Save report"), self._suggest(".html"), "HTML (*.html)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not write the report."), waitCursor=True):
                self.addLog(
                    _("Saved {path}").format(path=self.logic.export_report(self.state.result, path))
                )
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(path))

    def onExportDicom(self) -> None:
        """SEG + SR of the graded segments into a folder the user picks (the CT's study)."""
        p = self._parameterNode
        if not self._ensureDependencies(p.engine, "export"):
            return
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Folder for the DICOM SEG and SR"),
            slicer.app.defaultScenePath,
        )  # fmt: skip
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not export DICOM."), waitCursor=True):
            written = self.logic.export_dicom(
                self.state.result, p.inputVolume, p.outputSegmentation, folder
            )
            for path in written:
                self.addLog(_("Saved {path}").format(path=path))


#
# FemurScreenTest
#


class FemurScreenTest(ScriptedLoadableModuleTest):
    """In-Slicer test: the Logic on the shipped sample CT, in this process and in children.

    It uses the classical engine, which needs no PyTorch, so a Slicer without PyTorch still
    runs every test. When other packages are missing the test does not pass silently: it
    raises ``unittest.SkipTest`` naming them, which Slicer shows as "Test failed" and a ctest
    run reports as a failure.
    """

    ENGINE = "classical"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_ct_end_to_end()
        self.setUp()
        self.test_background_segmentation_and_grading()

    def _sampleVolume(self):
        import SampleData

        registerSampleData()
        return SampleData.downloadSample("FemurScreenCT")

    def _requirePackages(self, *stages) -> None:
        import unittest

        logic = FemurScreenLogic()
        needed = [m for stage in stages for m in logic.missing_packages(self.ENGINE, stage)]
        if needed:
            names = ", ".join(dict.fromkeys(str(m.requirement) for m in needed))
            self.delayDisplay("Skipped: missing packages " + names)
            raise unittest.SkipTest(
                f"FemurScreen self-test needs these Python packages: {names}. Press Segment "
                "in the FemurScreen panel to install them, then run the test again."
            )

    def test_sample_ct_end_to_end(self):
        self._requirePackages("segment", "grade")
        self.delayDisplay("Segmenting the sample CT")
        volume = self._sampleVolume()
        logic = FemurScreenLogic()
        segmentation = logic.process(volume, engine=self.ENGINE)
        names = {
            segmentation.GetSegmentation().GetNthSegment(i).GetName()
            for i in range(segmentation.GetSegmentation().GetNumberOfSegments())
        }
        self.assertEqual(names, {"Left proximal femur", "Right proximal femur"})
        self.assertFalse(logic.is_edited(segmentation))

        self.delayDisplay("Computing the bone status")
        first = logic.compute(volume, segmentation)
        self.assertTrue(any((first.result.get(s) or {}).get("graded") for s in ("left", "right")))
        self.assertEqual(first.results_table.GetNumberOfRows(), 2)

        self.delayDisplay("Editing a segment and recomputing")
        side = next(s for s in ("right", "left") if first.result[s]["graded"])
        segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(
            f"{side.capitalize()} proximal femur"
        )
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
        rows = mask.any(axis=(1, 2)).nonzero()[0]
        mask[rows[0] : rows[0] + max(1, len(rows) // 3)] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segment_id, volume)
        self.assertTrue(logic.is_edited(segmentation))
        second = logic.compute(volume, segmentation)
        self.assertNotEqual(first.rows, second.rows)
        self.delayDisplay("Test passed")

    def test_background_segmentation_and_grading(self):
        self._requirePackages("segment", "grade")
        self.delayDisplay("Segmenting and grading in background processes")
        volume = self._sampleVolume()
        logic = FemurScreenLogic()
        job = logic.start_segmentation(volume, engine=self.ENGINE, sides=("right",))
        job.wait(timeout=600)
        segmentation = logic.finish_segmentation(job)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        grading = logic.start_grading(volume, segmentation)
        grading.wait(timeout=600)
        background = logic.finish_grading(grading)
        here = logic.compute(volume, segmentation)
        self.assertEqual(
            background.result["right"]["probabilities"], here.result["right"]["probabilities"]
        )
        self.delayDisplay("Test passed")
