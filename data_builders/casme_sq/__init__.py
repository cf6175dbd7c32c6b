"""CAS(ME)^2 long-video TFDS builder (`tfds build data_builders/casme_sq`).

Named `casme_sq` ("CAS(ME) squared", as SOFTNet's `CASME_sq`) because `casme2`
is CASME II, a different dataset; TFDS names cannot hold `(`, `)` or `^`.
"""

from .casme_sq_dataset_builder import Builder
