"""Page layout of the viewer: Slicer views in the middle, the JCS panel left, results right.

The layout only binds widgets to state names and controller triggers; `viewer.JCSViewer` owns the logic.
Elements the browser test drives carry a stable `id`.
"""

from __future__ import annotations

from collections.abc import Callable

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

from .scene import WINDOW_PRESETS

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

VIEW_NAMES = {"Red": "Axial", "Green": "Coronal", "Yellow": "Sagittal"}
VIEW_COLOURS = {"Red": "#F34A33", "Green": "#6DAD4A", "Yellow": "#EFD64D"}

#: Files the download menu offers: (key, file name, label, MIME type, needs DICOM input).
DOWNLOADS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("seg", "lesions_seg.dcm", "DICOM-SEG", "application/dicom", True),
    ("sr", "report_sr.dcm", "DICOM SR report", "application/dicom", True),
    ("summary", "summary.csv", "Summary CSV", "text/csv", False),
    ("lesions", "lesions.csv", "Lesions CSV", "text/csv", False),
    ("slices", "slices.csv", "Slices CSV", "text/csv", False),
    ("json", "results.json", "Results JSON", "application/json", False),
    ("labelmap", "lesions_labelmap.nrrd", "Lesion labelmap", "application/octet-stream", False),
)


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
        with VAppBar(density="compact", elevation=1):
            VIcon("mdi-lungs", classes="ml-4 mr-2", color="#e8504a")
            VToolbarTitle("JCS Diagnosis", style="flex: none;", classes="mr-4")
            VChip("{{ jcs_case_name }}", id="jcs-case", size="small", variant="outlined", classes="mr-4")
            html.Span("Window", classes="text-caption mr-2")
            with VBtnToggle(v_model=("jcs_window",), mandatory=True, density="compact", variant="outlined"):
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
                active=(f"active_tool === '{SegmentEditorUI.__name__}'",),
                disabled=("!jcs_has_results",),
                id="jcs-tool-editor",
            )
            LayoutButton(classes="mt-1")
            editor_toolbar_slot = FlexContainer(align="center", classes="mt-2")
            VSpacer()
            undo_redo_slot = FlexContainer(align="center")

        with VNavigationDrawer(permanent=True, location="left", width=340, disable_resize_watcher=True):
            with html.Div(v_show=("active_tool === 'jcs'",), classes="pa-3"):
                _diagnosis_panel(diagnose, cancel, update_results)
            with html.Div(v_if=(f"active_tool === '{SegmentEditorUI.__name__}'",), classes="px-3 pt-3"):
                VBtn(
                    "Update results",
                    id="jcs-update-editor",
                    block=True,
                    color="primary",
                    prepend_icon="mdi-refresh",
                    disabled=("!jcs_has_results || jcs_busy",),
                    click=update_results,
                )
                html.Div(
                    "Edit the lesion segment (paint, erase, scissors, islands), then update the results. "
                    "The brush paints the slice shown only unless the sphere brush is switched on.",
                    classes="text-caption mt-1",
                    style="opacity: 0.7;",
                )
            editor = EditorUI(
                v_if=(f"active_tool === '{SegmentEditorUI.__name__}'",),
                style="height: calc(100% - 90px);",
            )

        with VNavigationDrawer(permanent=True, location="right", width=470, disable_resize_watcher=True):
            _results_panel(server, chart_click, row_click, download)

        with VMain(), FlexContainer(row=True, fill_height=True):
            layout_manager.initialize_layout_grid(layout)

        with VFooter(app=True, border=True, classes="py-0 text-caption"):
            VProgressCircular(indeterminate=("!!trame__busy",), size=14, width=2, classes="mr-2")
            html.Span("{{ jcs_footer }}")

        editing = (f"active_tool === '{SegmentEditorUI.__name__}'",)
        with editor_toolbar_slot:
            SegmentEditorToolbarUI(editor_ui=editor, v_if=editing)
        with undo_redo_slot:
            SegmentEditorUndoRedoUI(editor_ui=editor, v_if=editing)
    return layout, editor


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


def _state_alert(state: str, kind: str) -> None:
    """A compact alert showing the text of state variable ``state`` (element id: its name with dashes)."""
    VAlert(
        v_if=(state,),
        text=(state,),
        id=state.replace("_", "-"),
        type=kind,
        variant="tonal",
        density="compact",
        classes="mt-3 text-caption",
    )


def _diagnosis_panel(diagnose: Callable, cancel: Callable, update_results: Callable) -> None:
    html.Div("Case", classes="jcs-section mb-1")
    html.Div(
        "{{ jcs_case_details }}", id="jcs-case-details", classes="text-body-2 mb-4", style="opacity: 0.85;"
    )
    html.Div("Diagnosis", classes="jcs-section mb-2")
    with html.Div(classes="d-flex ga-2"):
        VBtn(
            "Diagnose",
            id="jcs-diagnose",
            color="primary",
            prepend_icon="mdi-play",
            disabled=("jcs_busy || !jcs_volume_loaded || !!jcs_blocker",),
            click=diagnose,
            classes="flex-grow-1",
        )
        VBtn("Cancel", id="jcs-cancel", variant="outlined", disabled=("!jcs_running",), click=cancel)
    _state_alert("jcs_blocker", "warning")
    with html.Div(v_if=("jcs_running",), classes="mt-3"):
        html.Div("{{ jcs_stage }}", id="jcs-stage", classes="text-caption mb-1")
        VProgressLinear(
            model_value=("jcs_progress",),
            indeterminate=("jcs_progress === 0",),
            color="primary",
            height=8,
            rounded=True,
        )
    _state_alert("jcs_error", "error")

    _rule_text()
    with VCard(v_if=("jcs_has_results",), variant="tonal", classes="mt-4", id="jcs-decision-card"):
        with VCardText():
            html.Div(
                "{{ jcs_decision }}",
                id="jcs-decision",
                classes="jcs-decision",
                style=("{ color: jcs_positive ? '#ff6b63' : '#6fcf7f' }",),
            )
            html.Div("{{ jcs_reading_line }}", id="jcs-positive-slices", classes="text-body-2 mt-1")
            html.Div(
                "Opacification {{ jcs_lesion_ml }} mL ({{ jcs_lesion_pct }} % of lung volume), "
                "{{ jcs_segmentation }} segmentation",
                id="jcs-lesion-ml",
                classes="text-body-2 mt-1",
            )
            html.Div(
                "{{ jcs_current_reading }}",
                v_if=("jcs_current_reading",),
                id="jcs-current-reading",
                classes="text-caption mt-1",
            )
            html.Div(
                "{{ jcs_decision_basis }}",
                v_if=("jcs_decision_basis",),
                id="jcs-decision-basis",
                classes="text-caption mt-1",
                style="opacity: 0.75;",
            )
            with html.Details(id="jcs-details", classes="text-caption mt-2", style="opacity: 0.8;"):
                html.Summary(
                    "Details: {{ jcs_notes.length ? jcs_notes.length + ' technical note' + "
                    "(jcs_notes.length > 1 ? 's' : '') + ', ' : '' }}weights"
                )
                html.Div(
                    "{{ note }}", v_for="(note, index) in jcs_notes", key="index", classes="jcs-note mt-1"
                )
                html.Div("{{ jcs_weights }}", classes="mt-1", style="opacity: 0.75;")

    with html.Div(v_if=("jcs_has_results",), classes="mt-5"):
        html.Div("Explanation overlay", classes="jcs-section")
        VSwitch(
            v_model=("jcs_heatmap_visible",),
            label="Grad-CAM heatmap",
            id="jcs-heatmap-toggle",
            color="primary",
            density="compact",
            hide_details=True,
        )
        VSlider(
            v_model=("jcs_heatmap_opacity",),
            min=0,
            max=1,
            step=0.05,
            label="Opacity",
            id="jcs-heatmap-opacity",
            disabled=("!jcs_heatmap_visible",),
            density="compact",
            hide_details=True,
            thumb_label=True,
        )
        html.Div("3-D view", classes="jcs-section mt-4")
        for key, label in (
            ("lesions", "Lesion surfaces"),
            ("lungs", "Lung surfaces (translucent)"),
            ("planes", "Slice planes"),
        ):
            VSwitch(
                v_model=(f"jcs_3d_{key}",),
                label=label,
                id=f"jcs-3d-{key}",
                color="primary",
                density="compact",
                hide_details=True,
            )
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
            disabled=("jcs_busy",),
            click=update_results,
        )
        html.Div("{{ jcs_edit_note }}", id="jcs-edit-note", classes="text-caption mt-1")


def _rule_text() -> None:
    """The decision rule of the loaded weights (from their card), before and after Diagnose."""
    html.Div(
        "{{ jcs_rule_text }}",
        v_if=("jcs_rule_text && !jcs_running",),
        id="jcs-rule",
        classes="text-caption mt-4",
        style="opacity: 0.8;",
    )
    with html.Details(
        v_if=("jcs_rule_why && !jcs_running",), classes="text-caption mt-1", style="opacity: 0.7;"
    ):
        html.Summary("Why this rule")
        html.Div("{{ jcs_rule_why }}", id="jcs-rule-why")
    html.Div(
        "One case per viewer: every browser that opens this address sees and edits the same case.",
        id="jcs-shared-case",
        classes="text-caption mt-2",
        style="opacity: 0.55;",
    )


def _summary_table() -> None:
    """The summary in sections (reading, lungs, opacification, zones, scores, density); the technical
    section is folded away."""
    with html.Div(id="jcs-table-summary", style="height: 430px; overflow-y: auto;", classes="jcs-table"):
        with html.Template(v_for="section in jcs_summary_sections", key="section.title"):
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


def _results_panel(server: Server, chart_click: Callable, row_click: Callable, download: Callable) -> None:
    ctrl = server.controller
    with html.Div(classes="pa-3", style="height: 100%; overflow-y: auto;"):
        html.Div("{{ jcs_chart_title }}", id="jcs-chart-title", classes="jcs-section mb-1")
        html.Div(
            v_html=("jcs_chart_svg",),
            id="jcs-chart",
            classes="jcs-chart",
            click=(chart_click, "[$event.offsetX / $event.currentTarget.clientWidth]"),
        )
        with html.Div(classes="d-flex justify-space-between text-caption", style="opacity: 0.6;"):
            html.Span("inferior")
            html.Span("{{ jcs_chart_legend }}", id="jcs-chart-legend")
            html.Span("superior")

        html.Div("Results", classes="jcs-section mt-4")
        html.Div(
            "Run Diagnose to fill the tables.",
            v_if=("!jcs_has_results",),
            classes="text-caption mt-1",
            style="opacity: 0.6;",
        )
        with VTabs(v_model=("jcs_table_tab", "summary"), density="compact"):
            VTab("Summary", value="summary", id="jcs-tab-summary")
            VTab("Lesions", value="lesions", id="jcs-tab-lesions")
            VTab("Slices", value="slices", id="jcs-tab-slices")
        with VWindow(v_model=("jcs_table_tab",)):
            with VWindowItem(value="summary"):
                _summary_table()
            for key in ("lesions", "slices"):
                with VWindowItem(value=key):
                    if key == "lesions":
                        html.Div("{{ jcs_lesion_caption }}", id="jcs-lesion-caption", classes="text-caption")
                    VDataTable(
                        id=f"jcs-table-{key}",
                        headers=(f"jcs_{key}_headers",),
                        items=(f"jcs_{key}_items",),
                        density="compact",
                        items_per_page=-1,
                        hide_default_footer=True,
                        fixed_header=True,
                        height=400,
                        hover=True,
                        classes="jcs-table",
                        click_row=(
                            f"(event, row) => trigger('{ctrl.trigger_name(row_click)}', ['{key}', row.index])"
                        ),
                        __events=[("click_row", "click:row")],  # not in trame-vuetify's event list
                    )

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
                    disabled=("!jcs_has_results || jcs_busy" + (" || !jcs_is_dicom" if needs_dicom else ""),),
                    click=(
                        f"utils.download('{filename}', trigger('{ctrl.trigger_name(download)}', ['{key}']), "
                        f"'{mime}')"
                    ),
                )
        html.Div(
            "{{ jcs_dicom_note }}",
            id="jcs-dicom-note",
            v_if=("!jcs_is_dicom",),
            classes="text-caption",
            style="opacity: 0.6;",
        )
