//! Figures of the KDE bandwidth study (in progress).
