package deployer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/manifest"
)

// Distelli's own templating example (manifest-template.html): Env sets DISTELLI_INSTALLVIEW to
// '"views/Hello.data"', InstallTemplates is [ "templates/Hello.template", "." ], and the release holds both files.
// The template is rendered between the unpacking and PostInstall, and PostInstall sees the result.
func TestInstallTemplatesDistelliExample(t *testing.T) {
	f := newLifecycleFixture(t)
	f.archive = makeArchive(t, []tarEntry{
		file("templates/Hello.template", "Hello {{name}}\n"),
		file("views/Hello.data", `{"name": "World"}`),
	})
	h := Hooks{
		Env:       []EnvVar{{Key: "DISTELLI_INSTALLVIEW", Value: `"views/Hello.data"`}},
		Templates: []manifest.Template{{Path: "templates/Hello.template", Dir: "."}},
		Sections:  map[string][]string{PhasePostInstall: {`cp Hello.template "$TRACE"`}},
	}
	l := f.lifecycle("v1", h)
	if err := l.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.takePhases(), "Env Extract InstallTemplates PostInstall Stop Flip"; got != want {
		t.Errorf("phases %q, want %q", got, want)
	}
	if got, _ := os.ReadFile(f.trace); string(got) != "Hello World\n" {
		t.Errorf("PostInstall saw %q, want the rendered template", got)
	}
	if got, _ := os.ReadFile(filepath.Join(l.InstallDir, "templates", "Hello.template")); string(got) != "Hello {{name}}\n" {
		t.Errorf("the template itself is %q: rendering into another directory must leave it", got)
	}
}

// Variables: the environment's own (literal) and the manifest's Env (expanded by the shell) are data; {{VAR}} is
// HTML-escaped and {{&VAR}} is not; a later data file wins; partials come from the data files; a template with no
// directory is rendered in place.
func TestInstallTemplatesDataAndPartials(t *testing.T) {
	f := newLifecycleFixture(t)
	f.archive = makeArchive(t, []tarEntry{
		file("conf/app.conf", "port={{PORT}} when={{WHEN}} node={{SHOAL_NODE}}\nraw={{&QUOTED}} esc={{QUOTED}}\n{{> footer}}\n{{#servers}}[{{.}}]{{/servers}} color={{color}}\n"),
		file("views/base.yml", "color: red\nservers: [a, b]\npartials:\n  footer: views/footer.mustache\n"),
		file("views/prod.json", `{"color": "blue"}`),
		file("views/footer.mustache", "-- {{color}} --\n"),
	})
	h := Hooks{
		Env:       []EnvVar{{Key: "PORT", Value: "80$((1+1))"}, {Key: "SHOAL_INSTALLVIEW", Value: "views/base.yml, views/prod.json"}},
		Templates: []manifest.Template{{Path: "conf/app.conf"}},
	}
	l := f.lifecycle("v1", h)
	l.Vars = append(l.Vars, "WHEN=<now>")
	if err := l.Deploy(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(l.InstallDir, "conf", "app.conf"))
	want := "port=802 when=&lt;now&gt; node=n1\nraw=it's $(not run) esc=it&#39;s $(not run)\n-- blue --\n[a][b] color=blue\n"
	if string(got) != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", got, want)
	}
}

// A template that cannot be rendered, or a path that leaves the install home, fails the deploy at
// InstallTemplates, before the flip: the running release stays.
func TestInstallTemplatesFailures(t *testing.T) {
	for name, tc := range map[string]struct {
		entries []tarEntry
		tmpl    manifest.Template
		want    string
	}{
		"unclosed tag": {[]tarEntry{file("a.tmpl", "{{#open}} never closed")}, manifest.Template{Path: "a.tmpl"}, "a.tmpl"},
		"missing":      {[]tarEntry{file("a.tmpl", "x")}, manifest.Template{Path: "b.tmpl"}, "is it in PkgInclude?"},
		// Extraction refuses links that leave the release; a PreInstall script can still make one.
		"link out":      {[]tarEntry{file("a.tmpl", "x")}, manifest.Template{Path: "a.tmpl", Dir: "etc"}, "leaves the install home"},
		"link template": {[]tarEntry{file("a.tmpl", "x")}, manifest.Template{Path: "etc/passwd"}, "leaves the install home"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newLifecycleFixture(t)
			f.archive = makeArchive(t, tc.entries)
			l := f.lifecycle("v1", Hooks{Templates: []manifest.Template{tc.tmpl},
				Sections: map[string][]string{PhasePreInstall: {"ln -s /etc etc"}}})
			err := l.Deploy(context.Background())
			var pe *PhaseError
			if !errors.As(err, &pe) || pe.Phase != PhaseTemplates || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("deploy: %v; want an InstallTemplates failure naming %q", err, tc.want)
			}
			if _, err := Current(f.envDir); err == nil {
				t.Errorf("a failed InstallTemplates flipped current")
			}
		})
	}
}
