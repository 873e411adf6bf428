package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
)

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// chart geometry, in SVG user units.
const (
	chartWidth  = 720
	labelWidth  = 260
	valueWidth  = 110
	barHeight   = 22
	barGap      = 8
	chartMargin = 6
)

// svgBar is one bar as drawn.
type svgBar struct {
	Label, Value string
	Y, W         float64
	TextY        float64
	// ValueX is where the value is written: after the bar.
	ValueX float64
	Best   bool
}

// svgChart is a comparison's chart as drawn.
type svgChart struct {
	Height, Width, LabelWidth, BarMax float64
	Bars                              []svgBar
}

// chart lays out c's bars: lengths proportional to the values, the best
// one (by c.Better) marked.
func chart(c Comparison) svgChart {
	ch := svgChart{Width: chartWidth, LabelWidth: labelWidth, BarMax: chartWidth - labelWidth - valueWidth}
	maxV, best := 0.0, -1
	for i, b := range c.Bars {
		maxV = math.Max(maxV, b.Value)
		if best < 0 || (c.Better == "lower" && b.Value < c.Bars[best].Value) || (c.Better != "lower" && b.Value > c.Bars[best].Value) {
			best = i
		}
	}
	for i, b := range c.Bars {
		w := 0.0
		if maxV > 0 {
			w = ch.BarMax * b.Value / maxV
		}
		y := chartMargin + float64(i)*(barHeight+barGap)
		ch.Bars = append(ch.Bars, svgBar{Label: b.Label, Value: formatValue(b.Value) + " " + c.Unit, Y: y, W: math.Max(w, 1),
			TextY: y + barHeight*0.7, ValueX: labelWidth + math.Max(w, 1) + 6, Best: i == best && len(c.Bars) > 1 && !c.Distribution})
	}
	ch.Height = 2*chartMargin + float64(len(c.Bars))*(barHeight+barGap)
	return ch
}

// formatValue prints a figure with three significant digits at most
// after the point, thousands unseparated.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"chart": chart,
	"met": func(m *bool) string {
		switch {
		case m == nil:
			return "not judged"
		case *m:
			return "met"
		}
		return "not met"
	},
	"metClass": func(m *bool) string {
		switch {
		case m == nil:
			return "none"
		case *m:
			return "met"
		}
		return "missed"
	},
	"secs":  func(s float64) string { return strconv.FormatFloat(s, 'f', 0, 64) + " s" },
	"upper": strings.ToUpper,
	"date":  func(r *Report) string { return r.Started.UTC().Format("2006-01-02 15:04 MST") },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>fibmesh perf report {{date .}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#1d232a;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #d8dee4;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #d8dee4;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7} code,pre{font:12px ui-monospace,monospace;background:#f3f5f7;padding:.1em .3em;border-radius:3px}
pre{padding:.6em;overflow-x:auto}
.cmp{border:1px solid #d8dee4;border-radius:6px;padding:.6em 1em;margin:1em 0}
.cmp h3{margin:.2em 0 .4em;font-size:1.05em}
.aim{margin:.3em 0}.met{color:#116329;font-weight:600}.missed{color:#a40e26;font-weight:600}.none{color:#57606a}
.ok{color:#116329}.failed{color:#a40e26}.skipped{color:#9a6700}
.note{color:#57606a;font-size:.92em}
svg text{font:12px system-ui,sans-serif}
</style></head><body>
<h1>fibmesh perf report</h1>
<p>{{date .}}; {{len .Steps}} benchmarks, {{len .NotRun}} not run. Figures are medians of each benchmark's rounds; each
benchmark measures its sides in one run, interleaved, on the same machine, so the ratios are what to compare.</p>

<h2>Machine</h2>
<table>
<tr><th>kernel</th><td>{{.Machine.Kernel}}{{if .Machine.KTLS}} (kTLS: yes){{else}} (kTLS: no tls ULP: the kTLS benches run in make vmtest's VM){{end}}</td></tr>
<tr><th>OS</th><td>{{.Machine.OS}}</td></tr>
<tr><th>CPU</th><td>{{.Machine.CPUModel}}, {{.Machine.CPUs}} CPUs</td></tr>
<tr><th>memory</th><td>{{printf "%.1f" .Machine.MemoryGiB}} GiB</td></tr>
<tr><th>Go</th><td>{{.Machine.GoVersion}}</td></tr>
<tr><th>load average at the start</th><td>{{printf "%.2f" .Machine.LoadAverage}}</td></tr>
<tr><th>host</th><td>{{.Machine.Hostname}}</td></tr>
</table>

<h2>Benchmarks</h2>
<table><tr><th>bench</th><th>command</th><th>status</th><th>time</th><th>summary</th></tr>
{{range .Steps}}<tr><td>{{.Name}}</td><td><code>{{.Command}}</code></td><td class="{{.Status}}">{{.Status}}{{if .Reason}}: {{.Reason}}{{end}}</td><td>{{secs .Seconds}}</td>
<td>{{range .Summaries}}<code>{{.Line}}</code><br>{{end}}{{if .Samples}}samples: <code>{{.Samples}}</code><br>{{end}}{{if .Log}}log: <code>{{.Log}}</code>{{end}}</td></tr>
{{end}}</table>

{{if .NotRun}}<h2>Not run</h2><ul>{{range .NotRun}}<li>{{.}}</li>{{end}}</ul>{{end}}

<h2>Comparisons</h2>
{{range .Comparisons}}{{$c := chart .}}<div class="cmp">
<h3>{{.Title}}</h3>
<svg width="{{$c.Width}}" height="{{$c.Height}}" viewBox="0 0 {{$c.Width}} {{$c.Height}}" role="img" aria-label="{{.Title}}">
{{range $c.Bars}}<text x="0" y="{{.TextY}}">{{.Label}}</text>
<rect x="{{$c.LabelWidth}}" y="{{.Y}}" width="{{printf "%.1f" .W}}" height="22" fill="{{if .Best}}#2da44e{{else}}#8c959f{{end}}"></rect>
<text x="{{printf "%.1f" .ValueX}}" y="{{.TextY}}">{{.Value}}</text>
{{end}}</svg>
<p class="aim">{{if .Aim}}Aim: {{.Aim}} — <span class="{{metClass .Met}}">{{met .Met}}</span>{{if .Figure}} ({{.Figure}}){{end}}{{else}}<span class="none">No aim stated for this figure.</span>{{end}}
({{.Better}} is better)</p>
{{if .Note}}<p class="note">{{.Note}}</p>{{end}}
<p class="note">from <code>{{.Source}}</code></p>
</div>
{{else}}<p>No benchmark produced a summary line.</p>
{{end}}
<h2>Summary lines</h2>
<pre>{{range .Steps}}{{range .Summaries}}{{.Line}}
{{end}}{{end}}</pre>
</body></html>
`))

// WriteHTML writes r as a self-contained HTML page.
func WriteHTML(w io.Writer, r *Report) error {
	if err := page.Execute(w, r); err != nil {
		return fmt.Errorf("report: render HTML: %w", err)
	}
	return nil
}
