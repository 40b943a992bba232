"""FRD v1's radiomic features computed in batches with PyTorch on the CPU or a GPU, equal to pyradiomics.

One module per pyradiomics feature class (firstorder, glcm, glrlm, glszm, ngtdm), each a function from a
batch of discretised images to a dict of feature name -> one float64 value per image, in pyradiomics'
order; preprocessing.py makes the inputs as frd-score's extractor does.
"""
