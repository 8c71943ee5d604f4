"""Small building blocks of the cockpit's pages."""

from __future__ import annotations

import warnings

from dash import dash_table


def data_table(**props) -> dash_table.DataTable:
    """A Dash DataTable (native sort, filter, paging). Dash 4 announces that DataTable will one
    day leave its builtin components; it is the table the cockpit relies on, so that notice is
    not passed on to the people running it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return dash_table.DataTable(**props)
