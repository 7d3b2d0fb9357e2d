"""What Grafana accepts in a dashboard: unit ids, the fields of dashboards, panels, queries
and variables, and the values of their enumerations.

Grafana publishes its dashboard schema as CUE/TypeScript, not as a JSON Schema a linter can
load, so this is a kept list of the fields of schemaVersion 39 dashboards (Grafana 10-11) and
of the core panel types' options. Unit ids are those of Grafana's unit picker
(packages/grafana-data/src/valueFormats/categories.ts) plus its custom-unit prefixes.
"""

from __future__ import annotations

UNIT_IDS = frozenset({
    "none", "string", "short", "percent", "percentunit", "humidity", "dB", "hex0x", "hex",
    "sci", "locale", "pixel", "accMS2", "accFS2", "accG", "degree", "radian", "grad", "arcmin",
    "arcsec", "areaM2", "areaF2", "areaMI2", "flops", "mflops", "gflops", "tflops", "pflops",
    "eflops", "zflops", "yflops", "ppm", "conppb", "conngm3", "conngNm3", "conμgm3",
    "conμgNm3", "conmgm3", "conmgNm3", "congm3", "congNm3", "conmgdL", "conmmolL",
    "currencyUSD", "currencyGBP", "currencyEUR", "currencyJPY", "currencyRUB", "currencyUAH",
    "currencyBRL", "currencyDKK", "currencyISK", "currencyNOK", "currencySEK", "currencyCZK",
    "currencyCHF", "currencyPLN", "currencyBTC", "currencymBTC", "currencyμBTC", "currencyZAR",
    "currencyINR", "currencyKRW", "bits", "bytes", "kbytes", "mbytes", "gbytes", "tbytes",
    "pbytes", "decbits", "decbytes", "deckbytes", "decmbytes", "decgbytes", "dectbytes",
    "decpbytes", "pps", "bps", "Bps", "KBs", "Kbits", "MBs", "Mbits", "GBs", "Gbits", "TBs",
    "Tbits", "PBs", "Pbits", "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS",
    "dateTimeAsUSNoDateIfToday", "dateTimeFromNow", "watt", "kwatt", "megwatt", "gwatt",
    "mwatt", "Wm2", "voltamp", "kvoltamp", "voltampreact", "kvoltampreact", "watth",
    "watthperkg", "kwatth", "kwattm", "amph", "kamph", "mamph", "joule", "ev", "amp", "kamp",
    "mamp", "volt", "kvolt", "mvolt", "dBm", "ohm", "kohm", "Mohm", "farad", "µfarad",
    "nfarad", "pfarad", "ffarad", "henry", "mhenry", "µhenry", "lumens", "flowgpm", "flowcms",
    "flowcfs", "flowcfm", "litreh", "flowlpm", "flowmlpm", "lux", "forceNm", "forcekNm",
    "forceN", "forcekN", "Hs", "KHs", "MHs", "GHs", "THs", "PHs", "EHs", "massmg", "massg",
    "masskg", "masst", "lengthmm", "lengthft", "lengthm", "lengthkm", "lengthmi",
    "pressurembar", "pressurebar", "pressurekbar", "pressurepa", "pressurehpa", "pressurekpa",
    "pressurehg", "pressurepsi", "radbq", "radci", "radgy", "radrad", "radsv", "radmsv",
    "radusv", "radrem", "radexpckg", "radr", "radsvh", "radmsvh", "radusvh", "rotrpm", "rothz",
    "rotrads", "rotdegs", "celsius", "fahrenheit", "kelvin", "hertz", "ns", "µs", "ms", "s",
    "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms", "timeticks", "clockms",
    "clocks", "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
    "velocityms", "velocitykmh", "velocitymph", "velocityknot", "mlitre", "litre", "m3", "Nm3",
    "dm3", "gallons", "bool", "bool_yes_no", "bool_on_off",
})
#: Custom units: `suffix:req`, `prefix:$`, `si:B`, `count:jobs`, `currency:€`, `time:YYYY`.
CUSTOM_UNIT_PREFIXES = ("suffix:", "prefix:", "si:", "count:", "currency:", "time:")

DASHBOARD_KEYS = frozenset({
    "__inputs", "__elements", "__requires", "annotations", "description", "editable",
    "fiscalYearStartMonth", "gnetId", "graphTooltip", "id", "links", "liveNow", "panels",
    "preload", "refresh", "schemaVersion", "style", "tags", "templating", "time",
    "timepicker", "timezone", "title", "uid", "version", "weekStart",
})
PANEL_KEYS = frozenset({
    "cacheTimeout", "collapsed", "datasource", "description", "fieldConfig", "gridPos",
    "hideTimeOverride", "id", "interval", "libraryPanel", "links", "maxDataPoints",
    "maxPerRow", "options", "panels", "pluginVersion", "queryCachingTTL", "repeat",
    "repeatDirection", "targets", "timeFrom", "timeShift", "title", "transformations",
    "transparent", "type",
})
TARGET_KEYS = frozenset({
    "datasource", "editorMode", "exemplar", "expr", "format", "hide", "instant", "interval",
    "intervalFactor", "legendFormat", "queryType", "range", "refId", "step",
})
VARIABLE_KEYS = frozenset({
    "allFormat", "allValue", "current", "datasource", "definition", "description", "hide",
    "includeAll", "label", "multi", "multiFormat", "name", "options", "query", "refresh",
    "regex", "skipUrlSync", "sort", "tagValuesQuery", "tags", "tagsQuery", "type", "useTags",
    "auto", "auto_count", "auto_min", "filters", "baseFilters",
})
FIELD_DEFAULT_KEYS = frozenset({
    "color", "custom", "decimals", "description", "displayName", "displayNameFromDS",
    "filterable", "links", "mappings", "max", "min", "noValue", "path", "thresholds", "unit",
    "writeable", "fieldMinMax",
})
PANEL_TYPES = frozenset({
    "alertlist", "annolist", "barchart", "bargauge", "candlestick", "canvas", "dashlist",
    "datagrid", "flamegraph", "gauge", "geomap", "graph", "heatmap", "histogram", "logs",
    "news", "nodeGraph", "piechart", "row", "stat", "state-timeline", "status-history",
    "table", "text", "timeseries", "traces", "trend", "xychart",
})
VARIABLE_TYPES = frozenset({"adhoc", "constant", "custom", "datasource", "groupby",
                            "interval", "query", "textbox", "system"})
TARGET_FORMATS = frozenset({"time_series", "table", "heatmap"})

_REDUCERS = frozenset({
    "allIsNull", "allIsZero", "allValues", "changeCount", "count", "delta", "diff",
    "diffperc", "distinctCount", "first", "firstNotNull", "last", "lastNotNull", "logmin",
    "max", "mean", "median", "min", "range", "step", "stdDev", "sum", "uniqueValues",
    "variance", "p1", "p5", "p10", "p25", "p75", "p90", "p95", "p99",
})
_LEGEND = {"displayMode": {"list", "table", "hidden"}, "placement": {"bottom", "right"},
           "showLegend": None, "calcs": _REDUCERS, "asTable": None, "isVisible": None,
           "sortBy": None, "sortDesc": None, "width": None}
_TOOLTIP = {"mode": {"single", "multi", "none"}, "sort": {"none", "asc", "desc"},
            "maxHeight": None, "maxWidth": None, "hideZeros": None}
_REDUCE = {"calcs": _REDUCERS, "fields": None, "values": None, "limit": None}
_ORIENTATION = {"auto", "horizontal", "vertical"}

#: Options of the core panel types: option -> allowed values (None: any value;
#: a dict: the keys of a nested object).
PANEL_OPTIONS: dict[str, dict[str, object]] = {
    "stat": {"reduceOptions": _REDUCE, "colorMode": {"value", "background",
                                                     "background_solid", "none"},
             "graphMode": {"none", "area"}, "textMode": {"auto", "value", "value_and_name",
                                                         "name", "none"},
             "justifyMode": {"auto", "center"}, "orientation": _ORIENTATION,
             "wideLayout": None, "showPercentChange": None, "percentChangeColorMode": None,
             "text": None},
    "gauge": {"reduceOptions": _REDUCE, "orientation": _ORIENTATION,
              "showThresholdLabels": None, "showThresholdMarkers": None, "sizing": None,
              "minVizWidth": None, "minVizHeight": None, "text": None},
    "bargauge": {"reduceOptions": _REDUCE, "orientation": _ORIENTATION,
                 "displayMode": {"basic", "lcd", "gradient"}, "showUnfilled": None,
                 "valueMode": {"color", "text", "hidden"}, "namePlacement": None,
                 "sizing": None, "minVizWidth": None, "minVizHeight": None,
                 "maxVizHeight": None, "text": None, "legend": _LEGEND},
    "timeseries": {"legend": _LEGEND, "tooltip": _TOOLTIP, "timezone": None},
}
