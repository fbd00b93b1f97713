"""Is routing right? Offline evaluation of a config and of the traffic it served.

* ``labelled``: accuracy of the classifier and rules on a labelled data set (``llm-router eval``).
* ``golden``: golden routing cases kept next to the config (``llm-router test``).
* ``inputs``: the decision inputs recorded with each ledger row (no prompt text), and reading them back.
* ``replay``: logged traffic re-decided under another config (``llm-router replay``).
* ``calibrate``: the threshold that would have produced a target flagship share (``llm-router calibrate``).
* ``offline``: the gateway's own routing path, built from a config without any I/O.
"""
