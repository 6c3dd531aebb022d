"""The report's sections (:class:`analysis.report.section.Section`), one module each; each module's
``SECTION`` is the instance :data:`analysis.report.SECTIONS` lists."""
