//! Apple's software-update catalog.
