"""Result tables (summary, lesions, slices) and the per-slice probability plot as MRML nodes.

Every table is filled by one function from the quantification records (jcs.quantify field names,
which carry their unit such as ``_ml`` or ``_percent``): one column per field, with Slicer unit
labels, so no cell is filled by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import slicer
import vtk

if TYPE_CHECKING:
    from jcs.pipeline import SliceRow

#: Unit token in a jcs.quantify field name -> unit label shown in Slicer's table view.
UNIT_TOKENS = {
    "ml": "mL",
    "mm": "mm",
    "mm2": "mm2",
    "mm3": "mm3",
    "percent": "%",
    "hu": "HU",
    "px": "px",
    "s": "s",
}

SLICE_COLUMN = "slice_index"
PROBABILITY_COLUMN = "classifier_probability"
#: Slice-table column of the segmenter rule's evidence (jcs.quantify / results.json).
SHARE_COLUMN = "opacified_lung_fraction"


def unitOf(field: str) -> str:
    """Unit label of a field from the unit token in its name ('' for counts, fractions, names)."""
    for token in reversed(field.lower().split("_")[1:]):
        if token in UNIT_TOKENS:
            return UNIT_TOKENS[token]
    return ""


def _title(field: str) -> str:
    words = [w for w in field.split("_") if w.lower() not in UNIT_TOKENS]
    return " ".join(words).capitalize()


def columnWording(field: str) -> tuple[str, str]:
    """Readable title and unit of a table column (`jcs.wording`'s lesion and slice labels, else from
    the field name)."""
    from jcs.wording import LESION_COLUMNS, SLICE_COLUMNS

    if field in SUMMARY_TITLES:
        return SUMMARY_TITLES[field], ""
    wording = LESION_COLUMNS.get(field) or SLICE_COLUMNS.get(field)
    if wording is not None and wording.scale == 1.0:
        return wording.label, wording.unit
    return _title(field), unitOf(field)


def _columnArray(values: list) -> vtk.vtkAbstractArray:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        array = vtk.vtkIntArray()
        for v in values:
            array.InsertNextValue(int(bool(v)))
    elif present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        array = vtk.vtkIntArray()
        for v in values:
            array.InsertNextValue(int(v) if v is not None else 0)
    elif present and all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        array = vtk.vtkDoubleArray()
        for v in values:
            array.InsertNextValue(float(v) if v is not None else float("nan"))
    else:
        array = vtk.vtkStringArray()
        for v in values:
            array.InsertNextValue("" if v is None else str(v))
    return array


def fillTable(tableNode: slicer.vtkMRMLTableNode, records: Sequence[Mapping]) -> None:
    """Replace the content of `tableNode` by one row per record and one column per field (with units)."""
    fields: list[str] = []
    for record in records:
        fields.extend(k for k in record if k not in fields and not isinstance(record[k], (dict, list)))
    table = vtk.vtkTable()
    for field in fields:
        array = _columnArray([record.get(field) for record in records])
        array.SetName(field)
        table.AddColumn(array)
    wasModified = tableNode.StartModify()
    tableNode.SetAndObserveTable(table)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    for field in fields:
        title, unit = columnWording(field)
        if hasattr(tableNode, "SetColumnTitle"):  # Slicer >= 5.9; SetColumnLongName before
            tableNode.SetColumnTitle(field, title)
        else:
            tableNode.SetColumnLongName(field, title)
        if unit:
            tableNode.SetColumnUnitLabel(field, unit)
    tableNode.SetLocked(True)
    tableNode.EndModify(wasModified)


#: Summary-table columns: the reader's (section, label, rounded value, unit), then the field name and its
#: exact value (what scripts, the SR report and the downloads read).
SUMMARY_COLUMNS = ("section", "label", "shown", "unit", "quantity", "value")
SUMMARY_TITLES = {
    "section": "Section",
    "label": "Measure",
    "shown": "Value",
    "unit": "Unit",
    "quantity": "Field",
    "value": "Exact value",
}


def summaryRecords(summary: Mapping) -> list[dict]:
    """The summary dict as rows of the summary table: grouped sections in reading order with readable
    labels, rounded values and units (`jcs.wording`), plus each field's name and exact value."""
    from jcs.wording import summary_rows

    return [
        {
            "section": row.section.value,
            "label": row.label,
            "shown": row.value,
            "unit": row.unit,
            "quantity": row.key,
            "value": _formatValue(summary[row.key]),
        }
        for row in summary_rows(summary, empty=True)
    ]


def lesionRecords(lesions: Sequence[Mapping]) -> list[dict]:
    """Lesion rows with the columns a reader needs first (`jcs.wording.LESION_COLUMNS`), then the rest;
    every field kept at full precision."""
    from jcs.wording import LESION_COLUMNS

    return [
        {
            **{k: row[k] for k in LESION_COLUMNS if k in row},
            **{k: v for k, v in row.items() if k not in LESION_COLUMNS},
        }
        for row in lesions
    ]


def sliceRecords(slices: Sequence[SliceRow], evidence: str | None = None) -> list[dict]:
    """Slice-table rows: `slice_index`, then the column the decision rule counts by (`evidence`, e.g.
    the segmenter rule's `opacified_lung_fraction`), then `classifier_probability` and the rest.

    The columns are slices.csv's (:class:`jcs.pipeline.SliceRow`, named as the quantification names them).
    """
    from jcs.pipeline import SliceRow

    names = SliceRow.SLICES_CSV_NAMES
    rows = []
    for slice_ in slices:
        data = slice_.to_json()
        row = {SLICE_COLUMN: data.pop(names[SLICE_COLUMN])}
        if evidence and evidence in data:
            row[evidence] = data.pop(evidence)
        row[PROBABILITY_COLUMN] = data.pop(names[PROBABILITY_COLUMN])
        row.update(data)
        rows.append(row)
    return rows


def _formatValue(value) -> str:
    """Exact text of a value (floats round-trip; the rounded one is the 'shown' column)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def readTable(tableNode: slicer.vtkMRMLTableNode) -> list[dict]:
    """Rows of a table node as dicts (numbers as float/int, text as str)."""
    table = tableNode.GetTable()
    rows: list[dict] = [{} for _ in range(table.GetNumberOfRows())]
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        name = column.GetName()
        for r in range(table.GetNumberOfRows()):
            value = table.GetValue(r, c)
            if isinstance(column, vtk.vtkStringArray):
                rows[r][name] = value.ToString()
            elif isinstance(column, vtk.vtkIntArray):
                rows[r][name] = value.ToInt()
            else:
                rows[r][name] = value.ToDouble()
    return rows


def columnValues(tableNode: slicer.vtkMRMLTableNode, name: str) -> np.ndarray:
    """One numeric column of a table node as a float array."""
    column = tableNode.GetTable().GetColumnByName(name)
    if column is None:
        raise KeyError(f"table '{tableNode.GetName()}' has no column '{name}'")
    return np.array([column.GetVariantValue(i).ToDouble() for i in range(column.GetNumberOfValues())])


def makeProbabilityPlot(
    scene: slicer.vtkMRMLScene,
    sliceTableNode: slicer.vtkMRMLTableNode,
    name: str,
    shareColumn: str | None = None,
) -> slicer.vtkMRMLPlotChartNode:
    """Plot chart of the per-slice COVID-19 probability along z (one point per axial slice).

    With `shareColumn` (cases decided by the segmenter rule) a second series plots that column, each
    slice's opacified share of the lung, the evidence the slices were counted by.
    """
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} slice probability")
    series.SetAndObserveTableNodeID(sliceTableNode.GetID())
    series.SetXColumnName(SLICE_COLUMN)
    series.SetYColumnName(PROBABILITY_COLUMN)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetColor(0.85, 0.2, 0.1)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} slice probability chart")
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("COVID-19 probability per axial slice")
    chart.SetXAxisTitle("axial slice (inferior to superior)")
    chart.SetYAxisTitle("P(COVID-19)")
    chart.SetYAxisRangeAuto(False)
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetLegendVisibility(False)
    if shareColumn:
        share = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} opacified share of the lung")
        share.SetAndObserveTableNodeID(sliceTableNode.GetID())
        share.SetXColumnName(SLICE_COLUMN)
        share.SetYColumnName(shareColumn)
        share.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeLine)
        share.SetColor(0.2, 0.45, 0.85)
        chart.AddAndObservePlotSeriesNodeID(share.GetID())
        chart.SetTitle("Opacified share of the lung and COVID-19 probability per axial slice")
        chart.SetYAxisTitle("share of the lung / P(COVID-19)")
        chart.SetLegendVisibility(True)
    return chart
