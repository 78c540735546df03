// Package picture draws a capture.Plan as a self-contained SVG: the
// netfilter hooks the plan attaches to, each chain as a box with a row per
// rule (what it matches, what it does, why), and the jumps as arrows. Given
// a trace, it highlights the packet's path and ends with the verdict.
package picture

import (
	"fmt"
	"html"
	"strings"

	"github.com/shunt-dev/shunt/capture"
	"github.com/shunt-dev/shunt/capture/trace"
)

// Geometry, in pixels. Text is monospace, so widths follow from lengths.
const (
	charW     = 6.6
	rowH      = 18
	headH     = 24
	gap       = 22
	margin    = 16
	hookW     = 170
	chainX    = margin + hookW + 40
	indexW    = 28
	matchW    = 380
	verdictW  = 170
	purposeW  = 560
	chainW    = indexW + matchW + verdictW + purposeW
	arrowLane = 60 // room right of the chains for jump arrows
)

// Colours.
const (
	ink       = "#222"
	faint     = "#888"
	boxFill   = "#f6f8fa"
	headFill  = "#dde7f3"
	hookFill  = "#e8e1f5"
	hitFill   = "#ffe08a"
	seenFill  = "#fbfbfb"
	pathColor = "#d1242f"
	jumpColor = "#57606a"
)

// Plan draws the plan.
func Plan(p *capture.Plan) string { return draw(p, nil) }

// Trace draws the plan with the traced packet's path highlighted.
func Trace(p *capture.Plan, r trace.Result) string { return draw(p, &r) }

type rowKey struct {
	chain string
	index int
}

type canvas struct {
	b        strings.Builder
	y        int
	chainTop map[string]int // y of each chain's header
	rowY     map[rowKey]int // y of each rule's row
	hit      map[rowKey]bool
	seen     map[rowKey]bool
}

func draw(p *capture.Plan, r *trace.Result) string {
	c := &canvas{chainTop: map[string]int{}, rowY: map[rowKey]int{}, hit: map[rowKey]bool{}, seen: map[rowKey]bool{}}
	if r != nil {
		for _, s := range r.Steps {
			c.seen[rowKey{s.Chain, s.Index}] = true
			if s.Matched {
				c.hit[rowKey{s.Chain, s.Index}] = true
			}
		}
	}
	c.y = margin
	var body strings.Builder
	title := "shunt capture plan"
	if r != nil {
		title = "packet: " + r.Packet.String()
	}
	c.text(&body, margin, c.y+12, title, "bold", ink)
	c.y += 30
	// Chain boxes first (they fix every row's position), then hooks and
	// arrows, which refer to those positions.
	var chains strings.Builder
	for _, ch := range p.Chains {
		c.chain(&chains, ch)
	}
	var arrows strings.Builder
	c.hooks(&arrows, p, r)
	c.jumps(&arrows, p, r)
	if r != nil {
		c.verdict(&chains, r)
	}
	width := chainX + chainW + arrowLane + margin
	fmt.Fprintf(&c.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans Mono, monospace" font-size="11">`+"\n",
		width, c.y+margin, width, c.y+margin)
	fmt.Fprintf(&c.b, `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>`, jumpColor)
	fmt.Fprintf(&c.b, `<marker id="hot" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker></defs>`+"\n", pathColor)
	fmt.Fprintf(&c.b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	c.b.WriteString(body.String())
	c.b.WriteString(chains.String())
	c.b.WriteString(arrows.String())
	c.b.WriteString("</svg>\n")
	return c.b.String()
}

func (c *canvas) text(b *strings.Builder, x, y int, s, weight, color string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" fill="%s" font-weight="%s">%s</text>`+"\n", x, y, color, weight, html.EscapeString(s))
}

// fit shortens s to what a column of width w shows.
func fit(s string, w int) string {
	max := int(float64(w-8) / charW)
	if len(s) <= max {
		return s
	}
	return s[:max-1] + "…"
}

func (c *canvas) chain(b *strings.Builder, ch *capture.Chain) {
	top := c.y
	c.chainTop[ch.Name] = top
	h := headH + rowH*len(ch.Rules)
	fmt.Fprintf(b, `<g class="chain" data-chain="%s">`+"\n", ch.Name)
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" rx="4" fill="%s" stroke="%s"/>`+"\n", chainX, top, chainW, h, boxFill, faint)
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" rx="4" fill="%s" stroke="%s"/>`+"\n", chainX, top, chainW, headH, headFill, faint)
	c.text(b, chainX+8, top+16, fit(fmt.Sprintf("%s  (%s)  %s", ch.Name, ch.Table, ch.Purpose), chainW), "bold", ink)
	for i, r := range ch.Rules {
		key := rowKey{ch.Name, i + 1}
		y := top + headH + rowH*i
		c.rowY[key] = y
		fill, weight, color, class := "none", "normal", ink, "rule"
		switch {
		case c.hit[key]:
			fill, weight, class = hitFill, "bold", "rule hit"
		case c.seen[key]:
			fill = seenFill
		case len(c.hit) > 0:
			color = faint
		}
		fmt.Fprintf(b, `<g class="%s" data-rule="%s#%d">`+"\n", class, ch.Name, i+1)
		if fill != "none" {
			fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", chainX+1, y, chainW-2, rowH, fill)
		}
		x := chainX + 6
		c.text(b, x, y+13, fmt.Sprint(i+1), weight, color)
		c.text(b, x+indexW, y+13, fit(r.Describe(), matchW), weight, color)
		c.text(b, x+indexW+matchW, y+13, fit(capture.VerdictString(r.Verdict), verdictW), weight, color)
		c.text(b, x+indexW+matchW+verdictW, y+13, fit(r.Purpose, purposeW), weight, color)
		b.WriteString("</g>\n")
	}
	b.WriteString("</g>\n")
	c.y = top + h + gap
}

// hooks draws a box per hook the plan attaches to, with an arrow into its
// entry chain.
func (c *canvas) hooks(b *strings.Builder, p *capture.Plan, r *trace.Result) {
	for _, ch := range p.Chains {
		if ch.Hook == "" {
			continue
		}
		y := c.chainTop[ch.Name]
		hot := r != nil && c.entered(ch.Name)
		stroke, marker := jumpColor, "arrow"
		if hot {
			stroke, marker = pathColor, "hot"
		}
		fmt.Fprintf(b, `<g class="hook" data-hook="%s %s">`+"\n", ch.Table, ch.Hook)
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" rx="12" fill="%s" stroke="%s"/>`+"\n", margin, y, hookW, headH, hookFill, stroke)
		c.text(b, margin+10, y+16, fmt.Sprintf("%s %s", ch.Table, ch.Hook), "bold", ink)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%d" marker-end="url(#%s)"/>`+"\n",
			margin+hookW, y+headH/2, chainX-2, y+headH/2, stroke, width(hot), marker)
		b.WriteString("</g>\n")
	}
}

func (c *canvas) entered(chain string) bool {
	for k := range c.seen {
		if k.chain == chain {
			return true
		}
	}
	return false
}

func width(hot bool) int {
	if hot {
		return 3
	}
	return 1
}

// jumps draws an arrow from every jumping rule, right of the boxes, to the
// header of the chain it jumps to; arrows the packet took are red.
func (c *canvas) jumps(b *strings.Builder, p *capture.Plan, r *trace.Result) {
	right := chainX + chainW
	lane := 0
	for _, ch := range p.Chains {
		for i, rule := range ch.Rules {
			j, ok := rule.Verdict.(capture.Jump)
			if !ok {
				continue
			}
			key := rowKey{ch.Name, i + 1}
			from, to := c.rowY[key]+rowH/2, c.chainTop[j.Chain]+headH/2
			hot := c.hit[key]
			stroke, marker := jumpColor, "arrow"
			if hot {
				stroke, marker = pathColor, "hot"
			}
			out := 12 + (lane%4)*11
			lane++
			fmt.Fprintf(b, `<path class="jump%s" data-from="%s#%d" data-to="%s" d="M%d,%d C%d,%d %d,%d %d,%d" fill="none" stroke="%s" stroke-width="%d" marker-end="url(#%s)"/>`+"\n",
				map[bool]string{true: " hit", false: ""}[hot], ch.Name, i+1, j.Chain,
				right, from, right+out*2, from, right+out*2, to, right+2, to, stroke, width(hot), marker)
		}
	}
}

func (c *canvas) verdict(b *strings.Builder, r *trace.Result) {
	fill := "#d3f0d8"
	if r.Outcome == trace.Redirected {
		fill = hitFill
	} else if r.Outcome == trace.Dropped {
		fill = "#f8d0d0"
	}
	fmt.Fprintf(b, `<g class="verdict"><rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="%s" stroke="%s" stroke-width="2"/>`+"\n",
		chainX, c.y, chainW, 30, fill, pathColor)
	c.text(b, chainX+10, c.y+19, fit("verdict: "+r.Verdict()+" ("+r.Reason+")", chainW), "bold", ink)
	b.WriteString("</g>\n")
	c.y += 30
}
