"""Published paper numbers and builders for the paper-layout result tables."""
from pgd.tables.paper_values import load_paper_values, paper_value

__all__ = ["load_paper_values", "paper_value"]
