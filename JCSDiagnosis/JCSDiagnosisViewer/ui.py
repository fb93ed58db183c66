"""Page layout of the viewer: Slicer views in the middle, the JCS panel left, results right.

The layout only binds widgets to the typed state names of the feature logics (:class:`PanelNames`) and to
their triggers; the logic lives in :mod:`.logic`. Elements the browser test drives carry a stable `id`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jcs.wording import HEATMAP_LEGEND
from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets.vuetify3 import (
    VAlert,
    VAppBar,
    VBtn,
    VBtnToggle,
    VCard,
    VCardText,
    VCheckbox,
    VChip,
    VDataTable,
    VFooter,
    VIcon,
    VMain,
    VNavigationDrawer,
    VProgressCircular,
    VProgressLinear,
    VSlider,
    VSpacer,
    VSwitch,
    VTab,
    VTabs,
    VToolbarTitle,
    VWindow,
    VWindowItem,
)
from trame_server import Server
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.ui import (
    ControlButton,
    FlexContainer,
    LayoutButton,
    PaintEffectState,
    SegmentEditorToolbarUI,
    SegmentEditorUI,
    SegmentEditorUndoRedoUI,
    SliderState,
    create_vertical_slice_view_gutter_ui,
    create_vertical_view_gutter_ui,
)
from trame_slicer.core import LayoutManager
from trame_slicer.segmentation import (
    BrushDiameterMode,
    SegmentationEffectErase,
    SegmentationEffectPaint,
)
from trame_slicer.views import SliceView

from .logic.downloads import DOWNLOADS
from .scene import WINDOW_PRESETS
from .state import CaseState, ChartState, DisplayState, ReadingState, RunState, TablesState

CSS = """
html { overflow-y: hidden; }
.jcs-section { font-size: 0.72rem; letter-spacing: 0.08em; text-transform: uppercase; opacity: 0.7; }
.jcs-decision { font-size: 1.25rem; font-weight: 600; }
.jcs-chart { cursor: crosshair; border: 1px solid #333; }
.jcs-table td, .jcs-table th { font-size: 0.75rem !important; white-space: nowrap; }
.jcs-table td, .jcs-table th { padding: 0 8px !important; }
.jcs-table .jcs-summary-row td:first-child { white-space: normal; }
.jcs-summary-row:nth-child(odd) { background: rgba(255, 255, 255, 0.04); }
details > summary { cursor: pointer; }
"""


@dataclass(frozen=True)
class PanelNames:
    """State names of the feature logics' typed states (``logic.name``), which the widgets bind to."""

    case: CaseState
    run: RunState
    reading: ReadingState
    tables: TablesState
    display: DisplayState
    chart: ChartState


#: The segment editor is the active tool.
EDITING = (f"active_tool === '{SegmentEditorUI.__name__}'",)
VIEW_NAMES = {"Red": "Axial", "Green": "Coronal", "Yellow": "Sagittal"}
VIEW_COLOURS = {"Red": "#F34A33", "Green": "#6DAD4A", "Yellow": "#EFD64D"}


#: Paint/erase brush at start: a 2-D disc of this diameter (mm) on the slice shown, as Slicer's editor.
BRUSH_DIAMETER_MM = SliderState(min_value=1, max_value=50, step=1, value=10)


class BrushUI(FlexContainer):
    """Paint/erase brush settings: diameter in mm and a labelled sphere (3-D) option, off by default.

    trame-slicer's own panel starts with the sphere brush and a screen-relative size; a radiologist
    correcting one axial slice expects Slicer's 2-D brush, which paints that slice only.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        brush = TypedState(self.state, PaintEffectState)
        brush.data.use_sphere_brush = False
        brush.data.brush_diameter_mode = BrushDiameterMode.Absolute
        TypedState.from_dataclass(brush.data.brush_diameter_slider, BRUSH_DIAMETER_MM)
        slider = brush.name.brush_diameter_slider
        with self:
            html.Div(
                f"Brush diameter: {{{{ {slider.value} }}}} mm", id="jcs-brush-size", classes="text-body-2"
            )
            VSlider(
                v_model=(slider.value,),
                min=(slider.min_value,),
                max=(slider.max_value,),
                step=(slider.step,),
                id="jcs-brush-diameter",
                density="compact",
                hide_details=True,
            )
            VCheckbox(
                v_model=(brush.name.use_sphere_brush,),
                label="Sphere brush (3-D: also paints the slices above and below)",
                id="jcs-brush-sphere",
                density="compact",
                hide_details=True,
            )
            html.Div(
                "Off: the brush paints the slice shown only, as Slicer's Segment Editor does.",
                classes="text-caption",
                style="opacity: 0.7;",
            )


class EditorUI(SegmentEditorUI):
    """trame-slicer's segment editor with :class:`BrushUI` for paint and erase."""

    def _register_effect_ui(self, effect_cls, effect_ui_type) -> None:
        if effect_cls in (SegmentationEffectPaint, SegmentationEffectErase):
            effect_ui_type = BrushUI
        super()._register_effect_ui(effect_cls, effect_ui_type)


def build_layout(
    server: Server,
    layout_manager: LayoutManager,
    n: PanelNames,
    *,
    diagnose: Callable,
    cancel: Callable,
    update_results: Callable,
    chart_click: Callable,
    row_click: Callable,
    download: Callable,
) -> tuple[VAppLayout, SegmentEditorUI]:
    """Build the page; return it and the segment editor panel (its logic is wired by the caller)."""
    with VAppLayout(server, template_name="main", theme="dark") as layout:
        client.Style(CSS)
        _app_bar(n)
        editor_toolbar_slot, undo_redo_slot = _tool_bar(n)
        with VNavigationDrawer(permanent=True, location="left", width=340, disable_resize_watcher=True):
            with html.Div(v_show=("active_tool === 'jcs'",), classes="pa-3"):
                _diagnosis_panel(n, diagnose, cancel, update_results)
            editor = _editor_panel(n, update_results)
        with VNavigationDrawer(permanent=True, location="right", width=470, disable_resize_watcher=True):
            _results_panel(server, n, chart_click, row_click, download)
        with VMain(), FlexContainer(row=True, fill_height=True):
            layout_manager.initialize_layout_grid(layout)
        with VFooter(app=True, border=True, classes="py-0 text-caption"):
            VProgressCircular(indeterminate=("!!trame__busy",), size=14, width=2, classes="mr-2")
            html.Span(shown(n.case.footer))
        with editor_toolbar_slot:
            SegmentEditorToolbarUI(editor_ui=editor, v_if=EDITING)
        with undo_redo_slot:
            SegmentEditorUndoRedoUI(editor_ui=editor, v_if=EDITING)
    return layout, editor


def _app_bar(n: PanelNames) -> None:
    """Title, case name, window presets and the research-use notice."""
    with VAppBar(density="compact", elevation=1):
        VIcon("mdi-lungs", classes="ml-4 mr-2", color="#e8504a")
        VToolbarTitle("JCS Diagnosis", style="flex: none;", classes="mr-4")
        VChip(shown(n.case.name), id="jcs-case", size="small", variant="outlined", classes="mr-4")
        html.Span("Window", classes="text-caption mr-2")
        with VBtnToggle(v_model=(n.case.window,), mandatory=True, density="compact", variant="outlined"):
            for preset in WINDOW_PRESETS:
                VBtn(preset, value=preset, size="small", id=f"jcs-window-{preset.lower()}")
        VSpacer()
        VChip(
            "Research use only, not for clinical diagnosis",
            color="warning",
            size="small",
            variant="tonal",
            prepend_icon="mdi-alert-outline",
            classes="mr-4",
        )


def _tool_bar(n: PanelNames) -> tuple[FlexContainer, FlexContainer]:
    """The narrow left bar: panel and editor buttons, layouts; returns the editor toolbar's slots."""
    with (
        VNavigationDrawer(permanent=True, location="left", width=44, disable_resize_watcher=True),
        FlexContainer(fill_height=True, align="center", classes="py-2"),
    ):
        ControlButton(
            name="JCS diagnosis panel",
            icon="mdi-stethoscope",
            click="active_tool = 'jcs'",
            active=("active_tool === 'jcs'",),
            id="jcs-tool-diagnosis",
        )
        ControlButton(
            name="Edit lesion segmentation",
            icon="mdi-brush",
            click=f"active_tool = '{SegmentEditorUI.__name__}'",
            active=EDITING,
            disabled=(f"!{n.reading.has_results}",),
            id="jcs-tool-editor",
        )
        LayoutButton(classes="mt-1")
        editor_toolbar_slot = FlexContainer(align="center", classes="mt-2")
        VSpacer()
        undo_redo_slot = FlexContainer(align="center")
    return editor_toolbar_slot, undo_redo_slot


def _editor_panel(n: PanelNames, update_results: Callable) -> SegmentEditorUI:
    """trame-slicer's segment editor with an 'Update results' button above it."""
    with html.Div(v_if=EDITING, classes="px-3 pt-3"):
        VBtn(
            "Update results",
            id="jcs-update-editor",
            block=True,
            color="primary",
            prepend_icon="mdi-refresh",
            disabled=(f"!{n.reading.has_results} || {n.run.busy}",),
            click=update_results,
        )
        html.Div(
            "Edit the lesion segment (paint, erase, scissors, islands), then update the results. "
            "The brush paints the slice shown only unless the sphere brush is switched on.",
            classes="text-caption mt-1",
            style="opacity: 0.7;",
        )
    return EditorUI(v_if=EDITING, style="height: calc(100% - 90px);")


def threed_view_overlay(server: Server, view_id: str, view) -> None:
    """trame-slicer's 3-D view gutter plus the view's name and a stable id (for the browser test)."""
    create_vertical_view_gutter_ui(server, view_id, view)
    html.Div(
        "3-D",
        id="jcs-view-threed",
        classes="text-caption",
        style="position: absolute; top: 4px; right: 10px; color: #9ab; pointer-events: none;"
        " font-weight: 600;",
    )


def slice_view_overlay(server: Server, view_id: str, view: SliceView) -> None:
    """trame-slicer's slice view gutter (reset, 3-D toggle, slider) plus the view's name and a stable id."""
    create_vertical_slice_view_gutter_ui(server, view_id, view)
    tag = view.get_singleton_tag()
    html.Div(
        VIEW_NAMES.get(tag, tag),
        id=f"jcs-view-{tag}",
        classes="text-caption",
        style=f"position: absolute; top: 4px; right: 10px; color: {VIEW_COLOURS.get(tag, '#ccc')};"
        " pointer-events: none; font-weight: 600;",
    )


def shown(name: str) -> str:
    """Template text showing the state variable ``name``."""
    return "{{ " + name + " }}"


def _state_alert(state: str, element_id: str, kind: str) -> None:
    """A compact alert showing the text of state variable ``state``."""
    VAlert(
        v_if=(state,),
        text=(state,),
        id=element_id,
        type=kind,
        variant="tonal",
        density="compact",
        classes="mt-3 text-caption",
    )


def _diagnosis_panel(n: PanelNames, diagnose: Callable, cancel: Callable, update_results: Callable) -> None:
    """The left panel: the case, Diagnose and its progress, the rule, the decision card, the display
    controls and 'Update results'."""
    _run_controls(n, diagnose, cancel)
    _rule_text(n)
    _decision_card(n)
    with html.Div(v_if=(n.reading.has_results,), classes="mt-5"):
        _display_controls(n)
        _update_controls(n, update_results)


def _run_controls(n: PanelNames, diagnose: Callable, cancel: Callable) -> None:
    html.Div("Case", classes="jcs-section mb-1")
    html.Div(shown(n.case.details), id="jcs-case-details", classes="text-body-2 mb-4", style="opacity: 0.85;")
    html.Div("Diagnosis", classes="jcs-section mb-2")
    with html.Div(classes="d-flex ga-2"):
        VBtn(
            "Diagnose",
            id="jcs-diagnose",
            color="primary",
            prepend_icon="mdi-play",
            disabled=(f"{n.run.busy} || !{n.case.loaded} || !!{n.case.blocker}",),
            click=diagnose,
            classes="flex-grow-1",
        )
        VBtn("Cancel", id="jcs-cancel", variant="outlined", disabled=(f"!{n.run.running}",), click=cancel)
    _state_alert(n.case.blocker, "jcs-blocker", "warning")
    with html.Div(v_if=(n.run.running,), classes="mt-3"):
        html.Div(shown(n.run.stage), id="jcs-stage", classes="text-caption mb-1")
        VProgressLinear(
            model_value=(n.run.progress,),
            indeterminate=(f"{n.run.progress} === 0",),
            color="primary",
            height=8,
            rounded=True,
        )
    _state_alert(n.run.error, "jcs-error", "error")


def _decision_card(n: PanelNames) -> None:
    """Verdict, what was counted, the opacification, the edit's reading, the classifier's aside, notes."""
    with VCard(v_if=(n.reading.has_results,), variant="tonal", classes="mt-4", id="jcs-decision-card"):
        with VCardText():
            html.Div(
                shown(n.reading.decision),
                id="jcs-decision",
                classes="jcs-decision",
                style=(f"{{ color: {n.reading.positive} ? '#ff6b63' : '#6fcf7f' }}",),
            )
            html.Div(shown(n.reading.reading_line), id="jcs-positive-slices", classes="text-body-2 mt-1")
            html.Div(
                f"Opacification {shown(n.reading.lesion_ml)} mL ({shown(n.reading.lesion_pct)} % of lung "
                f"volume), {shown(n.reading.segmentation)} segmentation",
                id="jcs-lesion-ml",
                classes="text-body-2 mt-1",
            )
            html.Div(
                shown(n.reading.current_reading),
                v_if=(n.reading.current_reading,),
                id="jcs-current-reading",
                classes="text-caption mt-1",
            )
            html.Div(
                shown(n.reading.decision_basis),
                v_if=(n.reading.decision_basis,),
                id="jcs-decision-basis",
                classes="text-caption mt-1",
                style="opacity: 0.75;",
            )
            notes = n.reading.notes
            with html.Details(id="jcs-details", classes="text-caption mt-2", style="opacity: 0.8;"):
                html.Summary(
                    "Details: "
                    + shown(
                        f"{notes}.length ? {notes}.length + ' technical note' + "
                        f"({notes}.length > 1 ? 's' : '') + ', ' : ''"
                    )
                    + "weights"
                )
                html.Div(
                    "{{ note }}",
                    v_for=f"(note, index) in {n.reading.notes}",
                    key="index",
                    classes="jcs-note mt-1",
                )
                html.Div(shown(n.reading.weights), classes="mt-1", style="opacity: 0.75;")


def _display_controls(n: PanelNames) -> None:
    """The heatmap overlay and the 3-D view's surfaces and planes."""
    html.Div("Explanation overlay", classes="jcs-section")
    VSwitch(
        v_model=(n.display.heatmap_visible,),
        label="Grad-CAM heatmap",
        id="jcs-heatmap-toggle",
        color="primary",
        density="compact",
        hide_details=True,
    )
    VSlider(
        v_model=(n.display.heatmap_opacity,),
        min=0,
        max=1,
        step=0.05,
        label="Opacity",
        id="jcs-heatmap-opacity",
        disabled=(f"!{n.display.heatmap_visible}",),
        density="compact",
        hide_details=True,
        thumb_label=True,
    )
    html.Div(HEATMAP_LEGEND, id="jcs-heatmap-legend", classes="text-caption mt-1", style="opacity: 0.75;")
    html.Div("3-D view", classes="jcs-section mt-4")
    for key, label in (
        ("lesions", "Lesion surfaces"),
        ("lungs", "Lung surfaces (translucent)"),
        ("planes", "Slice planes"),
    ):
        VSwitch(
            v_model=(getattr(n.display, f"{key}_3d"),),
            label=label,
            id=f"jcs-3d-{key}",
            color="primary",
            density="compact",
            hide_details=True,
        )


def _update_controls(n: PanelNames, update_results: Callable) -> None:
    html.Div("Lesion segmentation", classes="jcs-section mt-4")
    html.Div(
        "Correct the lesions with the segment editor (brush icon: paint, erase, scissors, islands), "
        "then update the results.",
        classes="text-caption mb-2",
    )
    VBtn(
        "Update results",
        id="jcs-update",
        block=True,
        variant="outlined",
        prepend_icon="mdi-refresh",
        disabled=(n.run.busy,),
        click=update_results,
    )
    html.Div(shown(n.run.edit_note), id="jcs-edit-note", classes="text-caption mt-1")


def _rule_text(n: PanelNames) -> None:
    """The decision rule of the loaded weights (from their card), before and after Diagnose."""
    html.Div(
        shown(n.reading.rule_text),
        v_if=(f"{n.reading.rule_text} && !{n.run.running}",),
        id="jcs-rule",
        classes="text-caption mt-4",
        style="opacity: 0.8;",
    )
    with html.Details(
        v_if=(f"{n.reading.rule_why} && !{n.run.running}",),
        classes="text-caption mt-1",
        style="opacity: 0.7;",
    ):
        html.Summary("Why this rule")
        html.Div(shown(n.reading.rule_why), id="jcs-rule-why")
    html.Div(
        "One case per viewer: every browser that opens this address sees and edits the same case.",
        id="jcs-shared-case",
        classes="text-caption mt-2",
        style="opacity: 0.55;",
    )


def _summary_table(n: PanelNames) -> None:
    """The summary in sections (reading, lungs, opacification, zones, scores, density); the technical
    section is folded away."""
    with html.Div(id="jcs-table-summary", style="height: 430px; overflow-y: auto;", classes="jcs-table"):
        with html.Template(v_for=f"section in {n.tables.summary_sections}", key="section.title"):
            with html.Details(open=("section.title !== 'Technical'",), classes="jcs-summary-section mb-1"):
                html.Summary("{{ section.title }}", classes="jcs-section mt-2")
                with html.Table(style="width: 100%; border-collapse: collapse;"), html.Tbody():
                    with html.Tr(v_for="row in section.rows", key="row.label", classes="jcs-summary-row"):
                        html.Td("{{ row.label }}", style="padding: 1px 4px;")
                        html.Td(
                            "{{ row.value }}",
                            style="padding: 1px 4px; text-align: right; font-variant-numeric: tabular-nums;",
                        )
                        html.Td("{{ row.unit }}", style="padding: 1px 4px; opacity: 0.7;")


def _results_panel(
    server: Server, n: PanelNames, chart_click: Callable, row_click: Callable, download: Callable
) -> None:
    """The right panel: the per-slice chart, the tables and the downloads."""
    with html.Div(classes="pa-3", style="height: 100%; overflow-y: auto;"):
        _chart(n, chart_click)
        _tables(server, n, row_click)
        _downloads(server, n, download)


def _chart(n: PanelNames, chart_click: Callable) -> None:
    html.Div(shown(n.chart.title), id="jcs-chart-title", classes="jcs-section mb-1")
    html.Div(
        v_html=(n.chart.svg,),
        id="jcs-chart",
        classes="jcs-chart",
        click=(chart_click, "[$event.offsetX / $event.currentTarget.clientWidth]"),
    )
    with html.Div(classes="d-flex justify-space-between text-caption", style="opacity: 0.6;"):
        html.Span("inferior")
        html.Span(shown(n.chart.legend), id="jcs-chart-legend")
        html.Span("superior")


def _tables(server: Server, n: PanelNames, row_click: Callable) -> None:
    """Summary, lesion and slice tables in tabs; a click on a lesion or slice row opens it."""
    html.Div("Results", classes="jcs-section mt-4")
    html.Div(
        "Run Diagnose to fill the tables.",
        v_if=(f"!{n.reading.has_results}",),
        classes="text-caption mt-1",
        style="opacity: 0.6;",
    )
    with VTabs(v_model=(n.tables.tab, "summary"), density="compact"):
        VTab("Summary", value="summary", id="jcs-tab-summary")
        VTab("Lesions", value="lesions", id="jcs-tab-lesions")
        VTab("Slices", value="slices", id="jcs-tab-slices")
    with VWindow(v_model=(n.tables.tab,)):
        with VWindowItem(value="summary"):
            _summary_table(n)
        for key in ("lesions", "slices"):
            with VWindowItem(value=key):
                if key == "lesions":
                    html.Div(shown(n.tables.lesion_caption), id="jcs-lesion-caption", classes="text-caption")
                VDataTable(
                    id=f"jcs-table-{key}",
                    headers=(getattr(n.tables, f"{key}_headers"),),
                    items=(getattr(n.tables, f"{key}_items"),),
                    density="compact",
                    items_per_page=-1,
                    hide_default_footer=True,
                    fixed_header=True,
                    height=400,
                    hover=True,
                    classes="jcs-table",
                    click_row=(
                        f"(event, row) => trigger('{server.controller.trigger_name(row_click)}', "
                        f"['{key}', row.index])"
                    ),
                    __events=[("click_row", "click:row")],  # not in trame-vuetify's event list
                )


def _downloads(server: Server, n: PanelNames, download: Callable) -> None:
    """One button per download; DICOM-SEG and SR only for a DICOM series they can reference."""
    trigger = server.controller.trigger_name(download)
    html.Div("Downloads", classes="jcs-section mt-4 mb-2")
    with html.Div(style="display: grid; grid-template-columns: 1fr 1fr; gap: 6px;"):
        for key, filename, label, mime, needs_dicom in DOWNLOADS:
            VBtn(
                label,
                id=f"jcs-download-{key}",
                size="small",
                variant="tonal",
                prepend_icon="mdi-download",
                title=filename,
                classes="text-none justify-start",
                disabled=(
                    f"!{n.reading.has_results} || {n.run.busy}"
                    + (f" || !{n.case.is_dicom}" if needs_dicom else ""),
                ),
                click=f"utils.download('{filename}', trigger('{trigger}', ['{key}']), '{mime}')",
            )
    html.Div(
        shown(n.case.dicom_note),
        id="jcs-dicom-note",
        v_if=(f"!{n.case.is_dicom}",),
        classes="text-caption",
        style="opacity: 0.6;",
    )
