"""asv suites: per-face prediction, feature extraction and CNN training throughput, on synthetic faces.

No dataset is needed: every suite draws 48x48 gray faces whose class is
visible (a bright bar at a class-specific row), so the figures track the
code, not the data.  Run from the repository root with ``asv run`` (asv is
not a dependency of fer-bench: ``pip install asv``); ``asv.conf.json`` points
here.  The ``bench_*.py`` scripts beside this file measure the same things on
FER-2013 and real models, for the README's tables.
"""

import numpy as np

N_CLASSES = 7


def synthetic_faces(n, seed=0):
    """``n`` uint8 faces (n, 48, 48) and their labels 0..6."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    X = rng.integers(0, 60, size=(n, 48, 48)).astype(np.uint8)
    for i, label in enumerate(y):
        X[i, 4 + 6 * label: 8 + 6 * label, 6:42] = 220
    return X, y


def _one_thread():
    """Pin BLAS and OpenMP to one thread, as the README's per-face figures are taken."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1)


class PerFacePrediction:
    """Milliseconds per face of a fitted classical model, features included, one face and a batch of 64."""

    params = (["hog", "lbp"], ["svm", "ls_svm", "knn"])
    param_names = ("features", "classifier")
    timeout = 300

    def setup(self, features, classifier):
        from fer_classic.model import ClassicModel

        X, y = synthetic_faces(350)
        self.model = ClassicModel(features, classifier).fit(X, y)
        self.one, self.batch = X[:1], X[:64]
        self._limits = _one_thread()

    def teardown(self, features, classifier):
        if self._limits is not None:
            self._limits.unregister()

    def time_one_face(self, features, classifier):
        self.model.predict_proba(self.one)

    def time_batch_of_64(self, features, classifier):
        self.model.predict_proba(self.batch)

    def peakmem_batch_of_64(self, features, classifier):
        self.model.predict_proba(self.batch)


class FeatureExtraction:
    """Feature extraction of 256 faces, one process."""

    params = (["hog", "lbp", "landmarks", "hog+lbp+landmarks"],)
    param_names = ("features",)
    timeout = 300

    def setup(self, features):
        from fer_classic.features import make_features

        self.faces, _ = synthetic_faces(256)
        self.extractor = make_features(features).fit(self.faces[:1])

    def time_transform(self, features):
        self.extractor.transform(self.faces)

    def peakmem_transform(self, features):
        self.extractor.transform(self.faces)


class CNNTrainingThroughput:
    """Training steps of a batch of 64 random faces per registered CNN (skipped without Keras)."""

    params = (["tutorial", "vgg", "mobilenet_v2"],)
    param_names = ("arch",)
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, arch):
        try:
            import keras
        except ImportError:
            raise NotImplementedError("the deep extra is not installed") from None
        from fer_deep.architectures import make_model

        keras.utils.set_random_seed(0)
        self.net = make_model(arch)
        self.net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        self.X = rng.integers(0, 256, size=(64, 48, 48, 1)).astype(np.float32)
        self.y = rng.integers(0, N_CLASSES, size=64)
        self.net.train_on_batch(self.X, self.y)  # builds the training function outside the timing

    def time_train_step_batch_of_64(self, arch):
        self.net.train_on_batch(self.X, self.y)

    def track_train_images_per_second(self, arch):
        import time

        start = time.perf_counter()
        for _ in range(3):
            self.net.train_on_batch(self.X, self.y)
        return 3 * 64 / (time.perf_counter() - start)

    track_train_images_per_second.unit = "images/s"
