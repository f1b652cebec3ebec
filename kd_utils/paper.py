"""The paper's own numbers, as data to compare with (Khan et al., 2022).

Tables 1-6 and Figure 7 as printed in the paper; the notebooks put every
result of ours beside these (``reporting.beside_paper``, ``sweep_table``).
"""

import pandas as pd

#: Table 1 - DSNet test accuracy by temperature (20 epochs).
TABLE1 = {3: 0.828, 5: 0.850, 7: 0.896, 10: 0.917, 20: 0.842, 50: 0.813, 70: 0.898, 90: 0.866, 100: 0.772}

#: Table 2 - students distilled at T = 10 (trainable params in millions, seconds, accuracy).
TABLE2 = pd.DataFrame(
    [
        ("ResNet101", 42.5, 1972, 14.55, 0.996),
        ("ResNet50", 23.5, 1165, 8.28, 0.994),
        ("InceptionV3", 21.7, 896, 10.26, 0.995),
        ("VGG16", 14.7, 664, 20.49, 0.998),
        ("EfficientNetB0", 4.0, 1070, 4.98, 0.820),
        ("MobileNet", 3.2, 660, 5.14, 0.985),
        ("DSNet", 0.26, 340, 2.57, 0.917),
    ],
    columns=["model", "params_m", "train_s", "predict_s", "accuracy"],
).set_index("model")

#: The teacher, reported beside Table 2.
TEACHER = {"accuracy": 0.996, "train_s": 596, "predict_s": 10.25}

#: Tables 3 and 4 - precision / recall / F1 per class.
PER_CLASS = pd.DataFrame(
    [
        ("Teacher", "malignant", 1.00, 0.99, 1.00),
        ("Teacher", "benign", 0.99, 1.00, 1.00),
        ("DSNet", "malignant", 0.96, 0.87, 0.91),
        ("DSNet", "benign", 0.88, 0.97, 0.92),
        ("MobileNet", "benign", 0.98, 0.99, 0.99),
        ("MobileNet", "malignant", 0.99, 0.98, 0.99),
        ("InceptionV3", "benign", 0.99, 0.98, 0.98),
        ("InceptionV3", "malignant", 0.98, 0.99, 0.99),
        ("EfficientNetB0", "benign", 0.80, 0.86, 0.83),
        ("EfficientNetB0", "malignant", 0.85, 0.78, 0.81),
        ("VGG16", "benign", 1.00, 1.00, 1.00),
        ("VGG16", "malignant", 1.00, 1.00, 1.00),
        ("ResNet50", "benign", 0.99, 1.00, 0.99),
        ("ResNet50", "malignant", 1.00, 0.99, 0.99),
        ("ResNet101", "benign", 1.00, 0.99, 1.00),
        ("ResNet101", "malignant", 0.99, 1.00, 1.00),
    ],
    columns=["model", "class", "precision", "recall", "f1"],
).set_index(["model", "class"])

#: Table 6 - DSNet accuracy by batch size (128 and 256 ran out of memory on a K80).
TABLE6 = {18: 0.881, 32: 0.897, 64: 0.917, 96: 0.831}

#: Figure 7 - ROC AUC per class.
AUC = {"Teacher": {"benign": 0.99, "malignant": 0.98}, "DSNet": {"benign": 0.95, "malignant": 0.95}}
