//! Apple MDM (plist) and DDM (JSON) wire types.
