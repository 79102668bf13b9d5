// Command promql-selectors prints the series selectors of PromQL expressions, parsed by
// Prometheus's own parser, so that a test can check every metric a rule or a dashboard reads
// against what the webhook and the API server really export.
//
// Input (standard input): a JSON array of expressions. Output (standard output): a JSON array
// with, for each expression in order, its selectors:
//
//	[[{"metric": "up", "matchers": [{"name": "job", "type": "=", "value": "x"}]}], ...]
//
// An expression that does not parse ends it with exit code 1 and one line naming it.
// hack/install-promtool.sh builds it beside promtool, from the same Prometheus module.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-selectors: standard input is not a JSON array of strings: %v\n", err)
		os.Exit(2)
	}
	promql := parser.NewParser(parser.Options{})
	out := make([][]selector, 0, len(exprs))
	for _, text := range exprs {
		expr, err := promql.ParseExpr(text)
		if err != nil {
			fmt.Fprintf(os.Stderr, "promql-selectors: %q does not parse: %v\n", text, err)
			os.Exit(1)
		}
		found := []selector{}
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			s := selector{Metric: vs.Name, Matchers: []matcher{}}
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					s.Metric = m.Value
					continue
				}
				s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
			}
			found = append(found, s)
			return nil
		})
		out = append(out, found)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "promql-selectors: %v\n", err)
		os.Exit(1)
	}
}
