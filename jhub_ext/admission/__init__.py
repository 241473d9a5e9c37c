"""Admission: what the hub's spawns and the service's submits share before work may start.

The quota lock every start of a group holds while it counts and records (``lock``), and the
jobs' reservations read from the service's database (``reservations``), counted by the catalog's
usage ledger (:mod:`jhub_ext.core.catalog.ledger`).
"""
