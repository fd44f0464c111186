"""The JetClass schema (Qu, Li, Qian 2022): its ten classes in the order of its label branches, which is
also the order of the published models' outputs. A module of its own, without heavy imports, so that
the data pipeline, the generator and the loading of published files share one definition."""

JETCLASS_CLASSES = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
JETCLASS_LABELS = tuple(f"label_{name}" for name in JETCLASS_CLASSES)
