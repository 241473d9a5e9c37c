"""The profile catalog: pure logic, no I/O beyond reading the catalog file.

Imports neither tornado, jupyterhub, kubespawner nor a Kubernetes client.
"""

from jhub_ext.core.catalog.load import CatalogError, catalog_schema, load_catalog, parse_catalog
from jhub_ext.core.catalog.model import Catalog, ImageChoice, Kind, Profile, Quota, Resources

__all__ = [
    "Catalog",
    "CatalogError",
    "ImageChoice",
    "Kind",
    "Profile",
    "Quota",
    "Resources",
    "catalog_schema",
    "load_catalog",
    "parse_catalog",
]
