"""Reading and writing images: CT input (ctio) and its checks, label maps, Slicer .seg.nrrd."""
