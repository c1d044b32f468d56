"""CPU mechanism experiments: each tests one mechanism the paper's claims rest on, with seeds and intervals.

* :mod:`.ccl_stability`: the category consistent loss, piecewise vs quadratic distance, 10 seeds;
* :mod:`.video_context`: the 3D criss-cross attention's time axis (CCNet3D T=1 vs T=5);
* :mod:`.stacking`: row-then-column attention (+HV, +HV&VH) vs criss-cross R=2;
* :mod:`.gamma_init`: gamma initialised to 0 (the paper) vs 1, curves.

Each entry declares one :class:`.common.Study` (settings, variants, report writer); shared pieces:
:mod:`.settings` (the engine's config extended with the task and model, variants, the paper's values),
:mod:`.model`, :mod:`.training` (resumable runs, worker processes), :mod:`.stats` (intervals, claims
rows), :mod:`.common` (the study driver and command line, figures, publication).
``experiments/longrange.py`` uses the same pieces.
"""
