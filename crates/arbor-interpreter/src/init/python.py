def _arbor_init():
    # Run silently by arbor-interpreter when the kernel starts: a pandas
    # DataFrame shown as a cell's value also carries its columns under
    # application/vnd.e2b.data+json (the SDK's `result.data`). Registered by
    # type name, so pandas is only imported once the user imports it.
    import json
    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    class DataFormatter(JSONFormatter):
        format_type = Unicode("application/vnd.e2b.data+json")
        print_method = "_repr_e2b_data_"

    def dataframe(df):
        return {
            str(c): json.loads(df[c].to_json(orient="values", date_format="iso", default_handler=str))
            for c in df.columns
        }

    ip = get_ipython()
    fmt = ip.display_formatter
    data = DataFormatter(parent=fmt)
    for module in ("pandas", "pandas.core.frame"):
        data.for_type_by_name(module, "DataFrame", dataframe)
    fmt.formatters[data.format_type] = data
    if data.format_type not in fmt.active_types:
        fmt.active_types.append(data.format_type)


_arbor_init()
del _arbor_init
