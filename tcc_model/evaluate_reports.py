"""Former home of the evaluation reports, kept so old imports work: see
:mod:`tcc_model.evaluate.reports`."""

from tcc_model.evaluate.reports import (
    headline,
    save_embeddings,
    summary_markdown,
    write_visual_reports,
)

__all__ = ["headline", "save_embeddings", "summary_markdown", "write_visual_reports"]
