"""FemurScreen Review: step through a cohort, correct the femur masks, sign each case off.

For annotators who refine ground-truth masks. The widget is thin: it wires the panel built from
``Resources/UI/FemurScreenReview.ui`` to :class:`FemurScreenLib.review.ReviewSession`, which
loads cases, reads the edited segments and writes reference masks, the review log and the
reviewed ``cohort.csv`` without Qt (tested on Slicer's real MRML).
"""

import logging
import os

import qt
import slicer
from FemurScreenLib import ReloadsPackages
from FemurScreenLib.review import (
    STATUSES,
    ReferenceExistsError,
    ReviewSession,
    default_reviewer,
    segment_editor_node,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

ENGINES = ("classical", "vbnet")  # classical first: the engine that works on the real CT
SETTINGS_REVIEWER = "FemurScreenReview/Reviewer"
SETTINGS_LAST_COHORT = "FemurScreenReview/LastCohort"
# Slicer binds Ctrl+Left/Right to previous/next module and Ctrl+Shift+Left/Right to Sequences.
SHORTCUTS = {
    "previous": "Ctrl+PgUp",
    "next": "Ctrl+PgDown",
    "nextUnreviewed": "Ctrl+Shift+PgDown",
}


class FemurScreenReview(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FemurScreen Review")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["FemurScreen developers"]
        self.parent.helpText = _(
            "Review a cohort of CTs for annotation: open a cohort CSV or a folder of CTs, go "
            "through the cases (Ctrl+PgDown / Ctrl+PgUp), correct each femur mask in the "
            "embedded Segment Editor and mark it accepted, corrected or rejected. Reference "
            "masks, a review log and a reviewed cohort.csv (for femurscreen train-seg and "
            "train-classifier) are written to the review folder; the source files are never "
            "modified. Reopening the cohort resumes at the first unreviewed case."
        )
        self.parent.acknowledgementText = _("Part of the FemurScreen extension.")


class FemurScreenReviewWidget(ReloadsPackages, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The review panel: wiring only; every file and MRML step is in ``ReviewSession``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.session = None
        self._shortcuts = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FemurScreenReview.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(segment_editor_node(slicer.mrmlScene))
        uiWidget.setMRMLScene(slicer.mrmlScene)
        for engine in ENGINES:
            self.ui.engineComboBox.addItem(engine)
        settings = qt.QSettings()
        self.ui.reviewerLineEdit.text = str(
            settings.value(SETTINGS_REVIEWER, "") or default_reviewer()
        )

        self.ui.openCsvButton.connect("clicked(bool)", self.onOpenCsv)
        self.ui.openFolderButton.connect("clicked(bool)", self.onOpenFolder)
        self.ui.previousButton.connect("clicked(bool)", self.onPrevious)
        self.ui.nextButton.connect("clicked(bool)", self.onNext)
        self.ui.nextUnreviewedButton.connect("clicked(bool)", self.onNextUnreviewed)
        self.ui.resegmentButton.connect("clicked(bool)", self.onResegment)
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.onDecide("accepted"))
        self.ui.correctedButton.connect("clicked(bool)", lambda: self.onDecide("corrected"))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.onDecide("rejected"))
        self.ui.reviewerLineEdit.connect("editingFinished()", self.onReviewerChanged)
        self.ui.engineComboBox.connect("currentIndexChanged(int)", self.onEngineChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self._update()

    def enter(self) -> None:
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self._installShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self._removeShortcuts()

    def cleanup(self) -> None:
        self._removeShortcuts()
        self.removeObservers()

    # ------------------------------------------------------------------ shortcuts

    def _installShortcuts(self) -> None:
        self._removeShortcuts()
        actions = {
            "previous": self.onPrevious,
            "next": self.onNext,
            "nextUnreviewed": self.onNextUnreviewed,
        }
        for name, key in SHORTCUTS.items():
            shortcut = qt.QShortcut(slicer.util.mainWindow())
            shortcut.setKey(qt.QKeySequence(key))
            shortcut.connect("activated()", actions[name])
            self._shortcuts.append((shortcut, actions[name]))

    def _removeShortcuts(self) -> None:
        for shortcut, callback in self._shortcuts:
            shortcut.disconnect("activated()", callback)
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._shortcuts = []

    # ------------------------------------------------------------------ opening

    def onOpenCsv(self) -> None:
        start = str(qt.QSettings().value(SETTINGS_LAST_COHORT, "") or "")
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Open cohort CSV"), start, "CSV (*.csv)"
        )
        if path:
            self.openCohort(path)

    def onOpenFolder(self) -> None:
        start = str(qt.QSettings().value(SETTINGS_LAST_COHORT, "") or "")
        path = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Open folder of CTs"), start
        )
        if path:
            self.openCohort(path)

    def openCohort(self, path: str) -> None:
        """Open a cohort and show its first unreviewed case."""
        if not self._confirmLeave():
            return
        if self.session is not None:
            self.session.unload()
            self.session = None
        try:
            with slicer.util.WaitCursor():
                self.session = ReviewSession.open(
                    path,
                    slicer.mrmlScene,
                    engine=self.ui.engineComboBox.currentText or ENGINES[0],
                    reviewer=self.ui.reviewerLineEdit.text.strip() or None,
                )
        except Exception as exc:  # shown to the user; the panel stays usable
            self._error(_("Could not open the cohort."), exc)
        else:
            qt.QSettings().setValue(SETTINGS_LAST_COHORT, os.path.dirname(os.path.abspath(path)))
            self.ui.cohortPathLineEdit.text = str(self.session.cohort.source)
            self.ui.reviewDirValueLabel.text = str(self.session.cohort.review_dir)
            self._show()
        self._update()

    # ------------------------------------------------------------------ navigation

    def _go(self, step) -> None:
        if self.session is None or not self._confirmLeave():
            return
        try:
            with slicer.util.WaitCursor():
                loaded = step()
        except Exception as exc:
            self._error(_("Could not load the case."), exc)
            loaded = None
        if loaded is not None:
            self._show()
        self._update()

    def onPrevious(self) -> None:
        self._go(lambda: self.session.previous())

    def onNext(self) -> None:
        self._go(lambda: self.session.next())

    def onNextUnreviewed(self) -> None:
        self._go(lambda: self.session.next_unreviewed())

    def onResegment(self) -> None:
        self._go(lambda: self.session.resegment())

    def onReviewerChanged(self) -> None:
        name = self.ui.reviewerLineEdit.text.strip()
        qt.QSettings().setValue(SETTINGS_REVIEWER, name)
        if self.session is not None and name:
            self.session.reviewer = name

    def onEngineChanged(self, index: int) -> None:
        if self.session is not None:
            self.session.engine = self.ui.engineComboBox.currentText

    def _confirmLeave(self) -> bool:
        """Ask before dropping edits that were not saved as a decision."""
        if self.session is None or self.session.current is None:
            return True
        try:
            edited = self.session.is_edited()
        except Exception:  # the nodes were removed by the user: nothing left to lose
            return True
        if not edited:
            return True
        return slicer.util.confirmYesNoDisplay(
            _("The segments of {case} were edited but not saved. Leave without saving?").format(
                case=self.session.current.case.case_id
            ),
            windowTitle=_("Unsaved edits"),
        )

    # ------------------------------------------------------------------ decisions

    def onDecide(self, status: str) -> None:
        if self.session is None or self.session.current is None or status not in STATUSES:
            return
        self.onReviewerChanged()
        edited = self.session.is_edited()
        if (
            status == "accepted"
            and edited
            and not slicer.util.confirmYesNoDisplay(
                _("The segments were edited. Save them as 'accepted' (not 'corrected')?"),
                windowTitle=_("Accepted after edits"),
            )
        ):
            return
        if (
            status == "corrected"
            and not edited
            and not slicer.util.confirmYesNoDisplay(
                _("The segments were not edited. Save them as 'corrected' anyway?"),
                windowTitle=_("Corrected without edits"),
            )
        ):
            return
        comment = self.ui.commentLineEdit.text
        try:
            with slicer.util.WaitCursor():
                entry = self.session.mark(status, comment)
        except ReferenceExistsError as exc:
            if not slicer.util.confirmYesNoDisplay(
                exc.message + "\n\n" + _("Replace the earlier reference and decision?"),
                windowTitle=_("Already reviewed"),
            ):
                return
            try:
                entry = self.session.mark(status, comment, overwrite=True)
            except Exception as exc2:
                self._error(_("Could not save the decision."), exc2)
                return
        except Exception as exc:
            self._error(_("Could not save the decision."), exc)
            return
        self.ui.commentLineEdit.text = ""
        logging.info("FemurScreen Review: %s %s (%s)", entry.case_id, entry.status, entry.mask)
        self.ui.statusLabel.text = _("{case}: {status}, saved {mask}").format(
            case=entry.case_id, status=entry.status, mask=entry.mask or _("(no mask)")
        )
        if self.ui.advanceCheckBox.checked and self.session.cohort.first_unreviewed() is not None:
            self._go(lambda: self.session.next_unreviewed())
        else:
            self._show()
            self._update()

    # ------------------------------------------------------------------ display

    def _show(self) -> None:
        """Put the current case in the views and the editor."""
        current = self.session.current if self.session else None
        if current is None:
            return
        self.ui.segmentEditorWidget.setSegmentationNode(current.segmentation)
        self.ui.segmentEditorWidget.setSourceVolumeNode(current.volume)
        slicer.util.setSliceViewerLayers(background=current.volume, fit=True)
        text = _("<b>{case}</b> (case {n} of {total}), segments from the {source}").format(
            case=current.case.case_id,
            n=current.index + 1,
            total=len(self.session.cohort),
            source=current.source,
        )
        if current.decision is not None:
            d = current.decision
            text += "<br>" + _("{status} by {reviewer} at {time}").format(
                status=d.status, reviewer=d.reviewer, time=d.time
            )
            if d.comment:
                text += f" - <i>{d.comment}</i>"
        if current.message:
            text += "<br><span style='color:#c0392b'>" + current.message + "</span>"
        self.ui.caseLabel.text = text

    def _update(self) -> None:
        session = self.session
        has_case = session is not None and session.current is not None
        if session is None:
            self.ui.progressLabel.text = _("No cohort open")
            self.ui.reviewProgressBar.value = 0
        else:
            total = len(session.cohort)
            done = session.cohort.reviewed_count()
            self.ui.progressLabel.text = session.progress_text()
            self.ui.reviewProgressBar.maximum = max(1, total)
            self.ui.reviewProgressBar.value = done
        index = session.current.index if has_case else -1
        self.ui.previousButton.enabled = has_case and index > 0
        self.ui.nextButton.enabled = has_case and index + 1 < len(session.cohort)
        self.ui.nextUnreviewedButton.enabled = (
            session is not None and session.cohort.first_unreviewed() is not None
        )
        for button in (
            self.ui.resegmentButton,
            self.ui.acceptButton,
            self.ui.correctedButton,
            self.ui.rejectButton,
        ):
            button.enabled = has_case

    def _error(self, text: str, exc: Exception) -> None:
        logging.exception(text)
        message = getattr(exc, "message", None) or str(exc)
        self.ui.statusLabel.text = text + " " + message
        slicer.util.errorDisplay(text + "\n\n" + message)

    def onSceneStartClose(self, caller, event) -> None:
        """The scene is closing: the case nodes go with it; the files stay."""
        self.session = None
        self.ui.cohortPathLineEdit.text = ""
        self.ui.reviewDirValueLabel.text = "-"
        self.ui.caseLabel.text = "-"
        self._update()


class FemurScreenReviewTest(ScriptedLoadableModuleTest):
    """In-Slicer test: review two phantoms through the same session the panel uses."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_review_two_phantoms()

    def test_review_two_phantoms(self):
        import tempfile

        import numpy as np
        from femurscreen.phantom import PhantomOptions, make_cohort

        folder = tempfile.mkdtemp(prefix="FemurScreenReview-")
        self.delayDisplay("Making two phantom CTs")
        make_cohort(folder, 2, 5, options=PhantomOptions(spacing=(1.6, 1.6, 2.0)), workers=1)
        session = ReviewSession.open(folder, slicer.mrmlScene, reviewer="selftest")
        self.assertEqual(session.current.index, 0)
        self.assertEqual(session.current.source, "cohort mask")
        session.mark("accepted")
        session.next()
        segment_id = session.current.segmentation.GetSegmentation().GetSegmentIdBySegmentName(
            "Left proximal femur"
        )
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(
            session.current.segmentation, segment_id, session.current.volume
        )
        rows = np.nonzero(mask.any(axis=(1, 2)))[0]
        mask[rows[-1] - 3 :] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask, session.current.segmentation, segment_id, session.current.volume
        )
        self.assertTrue(session.is_edited())
        session.mark("corrected", "top of the head trimmed")
        self.assertEqual(session.progress_text(), "2 of 2 reviewed")
        self.assertTrue(os.path.isfile(os.path.join(folder, "review", "cohort.csv")))
        session.unload()
        self.delayDisplay("Test passed")
