"""deepclust: deep image clustering (IMC-SwAV, ConCURL, SIC, DigPro) in one framework."""

__version__ = "0.1.0"
