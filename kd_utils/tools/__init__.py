"""What is run on a trained model or a dataset beyond the paper's steps.

``commands`` (what each command of ``python -m kd_utils`` does), ``deploy``
and ``tflite_export`` (prediction on image files, TFLite), ``model_card``,
``benchmark`` and ``flops`` (size and speed), ``estimate`` and ``steptime``
(hours a profile takes), ``external`` (scores on another clinic's labelled
folder), ``shortcuts`` (the dataset's artefacts and a battery of
lesion-preserving transforms), ``screen`` (a candidate change scored on
the validation split and that battery) and ``duplicates`` (near-copies and
the leakage audit). Built on the core and on ``kd_utils.experiments``.
"""
