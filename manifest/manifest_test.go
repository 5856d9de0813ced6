package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, file, src string) *Manifest {
	t.Helper()
	m, err := Parse(file, []byte(src))
	if err != nil {
		t.Fatalf("Parse(%s): %v", file, err)
	}
	return m
}

func TestDistelliNodeExample(t *testing.T) {
	data, err := os.ReadFile("testdata/example-node.distelli-manifest.yml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse("distelli-manifest.yml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		App:          "example-node",
		Owner:        "jdoe",
		Format:       FormatDistelli,
		PreBuild:     []string{`echo "---Beginning PreBuild---"`, "sudo apt-get update"},
		Build:        []string{`echo "---Building---"`, "npm install", "npm test"},
		PkgInclude:   []Include{{Glob: "*"}},
		PkgExclude:   []string{"node_modules/"},
		Env:          []EnvVar{{"PORT", "3000"}, {"NODE_ENV", "production"}},
		PreInstall:   []string{`echo "---Beginning PreInstall---"`, "sudo apt-get -y update", "sudo apt-get -y install build-essential", "sudo apt-get -y install nodejs"},
		PostInstall:  []string{`echo "---Beginning PostInstall---"`, "npm install"},
		Exec:         []string{"/usr/bin/nodejs app.js"},
		ProcessCount: 1,
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	if got := m.Timeout("PreInstall"); got != 900*time.Second {
		t.Errorf("PreInstall timeout = %v, want Distelli's 900s", got)
	}
	if got := m.Timeout("Build"); got != DefaultBuildTimeout {
		t.Errorf("Build timeout = %v, want %v", got, DefaultBuildTimeout)
	}
	if got := m.Timeout("Exec"); got != 0 {
		t.Errorf("Exec timeout = %v, want none", got)
	}
}

func TestDistelliShapes(t *testing.T) {
	src := `user/App:
  Build:
    - if [ -f Makefile ]; then
    -   make
    - else
    -   echo no make
    - fi
    -
    - 42
    - true
    -
      |
      echo literal
      echo block
    - >
      echo folded
      line
  PkgInclude:
    - '**/*.js'
    - ["target/*.jar", "lib/"]
  PreInstallTimeout: 60
  StartTimeout: "2m"
  BuildTimeout: 600
  ProcessCount: 3
  Start:
    - ./start.sh
  Exec:
    - exec node app.js
  InstallTemplates:
    - [ "templates/Hello.template", "." ]
  CommitData:
    - RepoType: Git
    - RepoPath: .
  HealthCheck:
    HTTP: http://127.0.0.1:3000/health
    Interval: 5
    MinHealthy: 30s
`
	m := mustParse(t, "distelli-manifest.yml", src)
	wantBuild := []string{"if [ -f Makefile ]; then", "make", "else", "echo no make", "fi", "42", "true",
		"echo literal\necho block\n", "echo folded line\n"}
	if !reflect.DeepEqual(m.Build, wantBuild) {
		t.Errorf("Build = %q\nwant    %q", m.Build, wantBuild)
	}
	wantInc := []Include{{Glob: "**/*.js"}, {Glob: "target/*.jar", Dest: "lib/"}}
	if !reflect.DeepEqual(m.PkgInclude, wantInc) {
		t.Errorf("PkgInclude = %+v", m.PkgInclude)
	}
	if m.Timeout("PreInstall") != time.Minute || m.Timeout("pre_install") != time.Minute {
		t.Errorf("PreInstall timeout = %v", m.Timeout("PreInstall"))
	}
	if m.Timeout("Start") != 2*time.Minute || m.Timeout("Build") != 10*time.Minute || m.Timeout("PostInstall") != 900*time.Second {
		t.Errorf("timeouts = %v", m.Timeouts)
	}
	if m.ProcessCount != 3 {
		t.Errorf("ProcessCount = %d", m.ProcessCount)
	}
	if m.Start != nil || !reflect.DeepEqual(m.Exec, []string{"exec node app.js"}) {
		t.Errorf("Exec must override Start: Start=%q Exec=%q", m.Start, m.Exec)
	}
	wantHC := &HealthCheck{HTTP: "http://127.0.0.1:3000/health", Interval: 5 * time.Second, MinHealthy: 30 * time.Second, Deadline: DefaultHealthDeadline}
	if !reflect.DeepEqual(m.HealthCheck, wantHC) {
		t.Errorf("HealthCheck = %+v", m.HealthCheck)
	}
	warnings := strings.Join(m.Warnings, "\n")
	if want := []Template{{Path: "templates/Hello.template", Dir: "."}}; !reflect.DeepEqual(m.InstallTemplates, want) {
		t.Errorf("InstallTemplates = %+v, want %+v", m.InstallTemplates, want)
	}
	if strings.Contains(strings.Join(m.Warnings, "\n"), "InstallTemplates") {
		t.Errorf("InstallTemplates is rendered now, yet warned about: %q", m.Warnings)
	}
	for _, w := range []string{"distelli-manifest.yml:25:3: Start is ignored", "distelli-manifest.yml:31:3: CommitData is ignored"} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
	if got := m.Script("exec"); !reflect.DeepEqual(got, m.Exec) {
		t.Errorf("Script(exec) = %q", got)
	}
}

const shoalExample = `app: example-node
build:
  pre_build:
    - node --version
  build:
    - npm ci
    - npm test
  after_build_success: [echo built]
  after_build_failure: [echo failed]
  custom_version_cmd: [cat VERSION]
  release_notes_cmd: [git log -1 --format=%s]
  timeouts:
    build: 45m
    pre_build: 300
package:
  include:
    - '*.js'
    - package.json
    - [dist/*.css, public/]
  exclude:
    - '**/*.test.js'
deploy:
  env:
    PORT: 3000
    GREETING: hello world
  pre_install: [echo pre-install]
  install: [echo install]
  post_install: [npm ci --omit=dev]
  pre_start: [echo pre-start]
  exec: [exec node app.js]
  post_start: [echo post-start]
  pre_restart: [echo pre-restart]
  post_restart: [echo post-restart]
  pre_terminate: [echo pre-terminate]
  terminate: [echo terminate]
  post_terminate: [echo post-terminate]
  process_count: 2
  timeouts:
    post_install: 10m
  health_check:
    command:
      - curl -fsS http://127.0.0.1:$PORT/health
    deadline: 2m
`

func TestShoalFull(t *testing.T) {
	m := mustParse(t, "shoal.yml", shoalExample)
	want := &Manifest{
		App:               "example-node",
		Format:            FormatShoal,
		PreBuild:          []string{"node --version"},
		Build:             []string{"npm ci", "npm test"},
		AfterBuildSuccess: []string{"echo built"},
		AfterBuildFailure: []string{"echo failed"},
		CustomVersionCmd:  []string{"cat VERSION"},
		ReleaseNotesCmd:   []string{"git log -1 --format=%s"},
		PkgInclude:        []Include{{Glob: "*.js"}, {Glob: "package.json"}, {Glob: "dist/*.css", Dest: "public/"}},
		PkgExclude:        []string{"**/*.test.js"},
		Env:               []EnvVar{{"PORT", "3000"}, {"GREETING", "hello world"}},
		PreInstall:        []string{"echo pre-install"},
		Install:           []string{"echo install"},
		PostInstall:       []string{"npm ci --omit=dev"},
		PreStart:          []string{"echo pre-start"},
		Exec:              []string{"exec node app.js"},
		PostStart:         []string{"echo post-start"},
		PreRestart:        []string{"echo pre-restart"},
		PostRestart:       []string{"echo post-restart"},
		PreTerminate:      []string{"echo pre-terminate"},
		Terminate:         []string{"echo terminate"},
		PostTerminate:     []string{"echo post-terminate"},
		ProcessCount:      2,
		Timeouts:          map[string]time.Duration{"Build": 45 * time.Minute, "PreBuild": 300 * time.Second, "PostInstall": 10 * time.Minute},
		HealthCheck: &HealthCheck{Command: []string{"curl -fsS http://127.0.0.1:$PORT/health"},
			Interval: DefaultHealthInterval, MinHealthy: DefaultHealthMinHealthy, Deadline: 2 * time.Minute},
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
}

// TestFormatsAgree parses the same recipe written both ways and expects the same Manifest, which is what
// the name table in docs/manifest.md promises.
func TestFormatsAgree(t *testing.T) {
	shoal := mustParse(t, "shoal.yml", shoalExample)
	distelli := mustParse(t, "distelli-manifest.yml", `me/example-node:
  PreBuild: [node --version]
  Build: [npm ci, npm test]
  AfterBuildSuccess: [echo built]
  AfterBuildFailure: [echo failed]
  CustomVersionCmd: [cat VERSION]
  ReleaseNotesCmd: [git log -1 --format=%s]
  BuildTimeout: 45m
  PreBuildTimeout: 300
  PkgInclude: ['*.js', package.json, [dist/*.css, public/]]
  PkgExclude: ['**/*.test.js']
  Env:
    - PORT: 3000
    - GREETING: hello world
  PreInstall: [echo pre-install]
  Install: [echo install]
  PostInstall: [npm ci --omit=dev]
  PreStart: [echo pre-start]
  Exec: [exec node app.js]
  PostStart: [echo post-start]
  PreRestart: [echo pre-restart]
  PostRestart: [echo post-restart]
  PreTerminate: [echo pre-terminate]
  Terminate: [echo terminate]
  PostTerminate: [echo post-terminate]
  ProcessCount: 2
  PostInstallTimeout: 600
  HealthCheck:
    Command: [curl -fsS http://127.0.0.1:$PORT/health]
    Deadline: 120
`)
	distelli.Owner, distelli.Format = "", FormatShoal
	if !reflect.DeepEqual(shoal, distelli) {
		t.Errorf("shoal.yml %+v\ndistelli  %+v", shoal, distelli)
	}
}

func TestFormatDetection(t *testing.T) {
	tests := []struct {
		file, src, want string
	}{
		{"shoal.yml", "build:\n  build: [make]\n", FormatShoal},
		{"ci/recipe.yml", "build:\n  build: [make]\n", FormatShoal},
		{"ci/recipe.yml", "me/app:\n  Build: [make]\n", FormatDistelli},
		{"shoal.yml", "me/app:\n  Build: [make]\n", FormatDistelli},
		{"deploy/distelli-manifest.yaml", "me/app:\n  Build: [make]\n", FormatDistelli},
	}
	for _, tt := range tests {
		if m := mustParse(t, tt.file, tt.src); m.Format != tt.want {
			t.Errorf("%s %q: format %s, want %s", tt.file, tt.src, m.Format, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            []string // each a whole error line, or its start
	}{
		{"syntax", "shoal.yml", "app: a\nbuild: b: c\n", []string{"shoal.yml:2: not valid YAML: mapping values are not allowed in this context"}},
		{"tab", "shoal.yml", "build:\n\tbuild: [a]\n", []string{"shoal.yml:2: not valid YAML", "tab"}},
		{"empty", "shoal.yml", "# nothing\n", []string{"shoal.yml: the manifest is empty"}},
		{"root list", "shoal.yml", "- a\n- b\n", []string{"shoal.yml:1:1: the manifest must be a mapping of keys to values, got a list"}},
		{"unknown top key", "shoal.yml", "build: [make]\n", []string{"shoal.yml:1:8: build must be a mapping of keys to values, got a list"}},
		{"typo top", "shoal.yml", "biuld:\n  build: [make]\n", []string{`shoal.yml:1:1: unknown key "biuld" in the manifest: did you mean "build"?`}},
		{"typo nested", "shoal.yml", "deploy:\n  pre_instal: [x]\n", []string{`shoal.yml:2:3: unknown key "pre_instal" in deploy: did you mean "pre_install"?`}},
		{"deploy in build", "shoal.yml", "build:\n  exec: [x]\n", []string{"shoal.yml:2:3: exec is a deploy section: move it under deploy:"}},
		{"build in deploy", "shoal.yml", "deploy:\n  build: [x]\n", []string{"shoal.yml:2:3: build is a build section: move it under build:"}},
		{"script mapping", "distelli-manifest.yml", "u/A:\n  Build:\n    npm: test\n", []string{"distelli-manifest.yml:3:5: Build must be a list of shell lines, got a mapping"}},
		{"script item mapping", "distelli-manifest.yml", "u/A:\n  Build:\n    - echo a: b\n", []string{"distelli-manifest.yml:3:7: Build must be a list of shell lines, but this item is a mapping: quote the line"}},
		{"script item list", "shoal.yml", "build:\n  build:\n    - [a, b]\n", []string{"shoal.yml:3:7: build.build must be a list of shell lines, but this item is a list"}},
		{"duplicate", "distelli-manifest.yml", "u/A:\n  Build: [a]\n  Build: [b]\n", []string{"distelli-manifest.yml:3:3: Build appears twice in u/A (first at line 2): keep one"}},
		{"distelli typo", "distelli-manifest.yml", "u/A:\n  PreInstal: [a]\n", []string{`distelli-manifest.yml:2:3: unknown key "PreInstal" in u/A: did you mean "PreInstall"?`}},
		{"distelli case", "distelli-manifest.yml", "u/A:\n  build: [a]\n", []string{`distelli-manifest.yml:2:3: unknown key "build" in u/A: did you mean "Build"?`}},
		{"distelli unknown", "distelli-manifest.yml", "u/A:\n  Frobnicate: [a]\n", []string{`distelli-manifest.yml:2:3: unknown key "Frobnicate" in u/A (docs/manifest.md lists the keys)`}},
		{"root key", "distelli-manifest.yml", "example-node:\n  Build: [a]\n", []string{`distelli-manifest.yml:1:1: the root key "example-node" must be "user/App"`}},
		{"two apps", "distelli-manifest.yml", "u/A:\n  Build: [a]\nu/B:\n  Build: [b]\n", []string{`distelli-manifest.yml:3:1: the manifest holds a second application "u/B" after "u/A"`}},
		{"no app", "distelli-manifest.yml", "{}\n", []string{`distelli-manifest.yml:1:1: the manifest has no application`}},
		{"include triple", "distelli-manifest.yml", "u/A:\n  PkgInclude:\n    - [a, b, c]\n", []string{"distelli-manifest.yml:3:7: PkgInclude item must be a glob or a pair [glob, dest_dir], got a list of 3"}},
		{"include mapping", "distelli-manifest.yml", "u/A:\n  PkgInclude:\n    - a: b\n", []string{"distelli-manifest.yml:3:7: PkgInclude item must be a glob or a pair [glob, dest_dir], got a mapping"}},
		{"include abs", "shoal.yml", "package:\n  include: [/etc/passwd]\n", []string{`shoal.yml:2:13: package.include item "/etc/passwd" is an absolute path`}},
		{"include dotdot", "shoal.yml", "package:\n  include: [../x]\n", []string{`shoal.yml:2:13: package.include item "../x" climbs out`}},
		{"include bad glob", "shoal.yml", "package:\n  include: ['a[']\n", []string{`shoal.yml:2:13: package.include item "a[" is not a valid glob`}},
		{"dest dotdot", "shoal.yml", "package:\n  include: [[a, ../lib]]\n", []string{`shoal.yml:2:17: package.include destination "../lib" climbs out`}},
		{"exclude mapping", "shoal.yml", "package:\n  exclude: {a: b}\n", []string{`shoal.yml:2:12: package.exclude must be a list of globs, got a mapping`}},
		{"package typo", "shoal.yml", "package:\n  includes: [a]\n", []string{`shoal.yml:2:3: unknown key "includes" in package: did you mean "include"?`}},
		{"env two keys", "distelli-manifest.yml", "u/A:\n  Env:\n    - A: 1\n      B: 2\n", []string{"distelli-manifest.yml:3:7: Env item must be one KEY: value, got a mapping of 2 keys"}},
		{"env string item", "distelli-manifest.yml", "u/A:\n  Env:\n    - PORT=3000\n", []string{`distelli-manifest.yml:3:7: Env item must be one KEY: value, got the text "PORT=3000"`}},
		{"env bad name", "shoal.yml", "deploy:\n  env:\n    1PORT: 3000\n", []string{`shoal.yml:3:5: deploy.env name "1PORT" is not a valid variable name`}},
		{"env value list", "shoal.yml", "deploy:\n  env:\n    PORT: [1]\n", []string{`shoal.yml:3:11: deploy.env value of PORT must be text, got a list`}},
		{"process count zero", "distelli-manifest.yml", "u/A:\n  ProcessCount: 0\n", []string{"distelli-manifest.yml:2:17: ProcessCount must be a whole number of at least 1, got a number (0)"}},
		{"process count text", "shoal.yml", "deploy:\n  process_count: two\n", []string{`shoal.yml:2:18: deploy.process_count must be a whole number of at least 1, got the text "two"`}},
		{"timeout negative", "distelli-manifest.yml", "u/A:\n  InstallTimeout: -5\n", []string{"distelli-manifest.yml:2:19: InstallTimeout must be a positive number of seconds or a duration such as 90s or 15m, got a number (-5)"}},
		{"timeout text", "shoal.yml", "deploy:\n  timeouts:\n    install: soon\n", []string{`shoal.yml:3:14: deploy.timeouts.install must be a positive number of seconds`}},
		{"exec timeout distelli", "distelli-manifest.yml", "u/A:\n  ExecTimeout: 5\n", []string{`distelli-manifest.yml:2:3: unknown key "ExecTimeout" in u/A`}},
		{"exec timeout shoal", "shoal.yml", "deploy:\n  timeouts:\n    exec: 5\n", []string{"shoal.yml:3:5: exec has no time limit"}},
		{"deploy timeout in build", "shoal.yml", "build:\n  timeouts:\n    install: 5\n", []string{"shoal.yml:3:5: install is a deploy section: put its limit under deploy.timeouts"}},
		{"timeout unknown", "shoal.yml", "build:\n  timeouts:\n    compile: 5\n", []string{`shoal.yml:3:5: unknown key "compile" in build.timeouts`}},
		{"health both", "shoal.yml", "deploy:\n  health_check:\n    http: http://x/\n    command: [true]\n", []string{"shoal.yml:3:5: deploy.health_check needs exactly one of http (a URL) and command (script lines)"}},
		{"health neither", "shoal.yml", "deploy:\n  health_check:\n    interval: 5\n", []string{"shoal.yml:3:5: deploy.health_check needs exactly one of"}},
		{"health bad url", "shoal.yml", "deploy:\n  health_check:\n    http: localhost:3000\n", []string{`shoal.yml:3:11: deploy.health_check.http must be an http:// or https:// URL, got "localhost:3000"`}},
		{"health typo", "distelli-manifest.yml", "u/A:\n  HealthCheck:\n    Url: http://x/\n", []string{`distelli-manifest.yml:3:5: unknown key "Url" in HealthCheck`}},
		{"app list", "shoal.yml", "app: [a]\n", []string{"shoal.yml:1:6: app must be text, got a list"}},
		{"merge key", "shoal.yml", "x: &x {build: [a]}\nbuild:\n  <<: *x\n", []string{`shoal.yml:1:1: unknown key "x" in the manifest`, "shoal.yml:3:3: build uses a YAML merge key"}},
		{"all at once", "shoal.yml", "biuld: {}\ndeploy:\n  env: 5\n  process_count: 0\n", []string{`shoal.yml:1:1: unknown key "biuld"`, "shoal.yml:3:8: deploy.env must be a list of KEY: value items, got a number (5)", "shoal.yml:4:18: deploy.process_count"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.file, []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; got %+v", m)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not an ErrorList: %v", err, err)
			}
			var one *Error
			if !errors.As(err, &one) || one.File != tt.file {
				t.Fatalf("errors.As(*Error) = %+v", one)
			}
			if len(list) != len(tt.want) && tt.name != "tab" {
				t.Errorf("got %d errors, want %d:\n%v", len(list), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	m := mustParse(t, "shoal.yml", "deploy:\n  pre_start: &stop [echo stop]\n  pre_terminate: *stop\n")
	if !reflect.DeepEqual(m.PreTerminate, []string{"echo stop"}) {
		t.Errorf("PreTerminate = %q", m.PreTerminate)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := Load(dir, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty repo: err = %v, want ErrNotFound", err)
	}
	write(DistelliFile, "me/app:\n  Build: [make]\n")
	m, used, err := Load(dir, "")
	if err != nil || used != DistelliFile || m.Format != FormatDistelli {
		t.Fatalf("Load = %v, %q, %v", m, used, err)
	}
	write(ShoalFile, "build:\n  build: [make]\n")
	if m, used, err = Load(dir, ""); err != nil || used != ShoalFile || m.Format != FormatShoal {
		t.Fatalf("shoal.yml must win: %v, %q, %v", m, used, err)
	}
	write("ci/other.yml", "build:\n  biuld: [make]\n")
	_, used, err = Load(dir, "ci/other.yml")
	if used != "ci/other.yml" || err == nil || !strings.Contains(err.Error(), "ci/other.yml:2:3: unknown key") {
		t.Fatalf("explicit path: %q, %v", used, err)
	}
	if _, _, err = Load(dir, "missing.yml"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing explicit path: %v", err)
	}
	for _, bad := range []string{"../shoal.yml", "/etc/passwd"} {
		if _, _, err = Load(dir, bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%q) = %v, want a refusal", bad, err)
		}
	}
	outside := filepath.Join(t.TempDir(), "secret.yml")
	if err := os.WriteFile(outside, []byte("build: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link.yml")); err != nil {
		t.Fatal(err)
	}
	if _, _, err = Load(dir, "link.yml"); err == nil {
		t.Error("a symlink out of the repository must be refused")
	}
	write("big.yml", strings.Repeat("#", MaxSize+1))
	if _, _, err = Load(dir, "big.yml"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized manifest: %v", err)
	}
}

// PreRelease runs between Build and AfterBuildSuccess, as in Distelli; InstallTemplates takes a path or a pair,
// in both formats, and refuses paths that leave the install home.
func TestPreReleaseAndTemplates(t *testing.T) {
	d := mustParse(t, "distelli-manifest.yml", `user/App:
  Build:
    - make
  PreRelease:
    - rm -rf test-output
  PreReleaseTimeout: 30
  InstallTemplates:
    - config/app.conf
    - [ "templates/nginx.conf", "etc/" ]
`)
	if !reflect.DeepEqual(d.PreRelease, []string{"rm -rf test-output"}) || d.Timeout("PreRelease") != 30*time.Second {
		t.Errorf("PreRelease = %q, timeout %v", d.PreRelease, d.Timeout("PreRelease"))
	}
	want := []Template{{Path: "config/app.conf"}, {Path: "templates/nginx.conf", Dir: "etc/"}}
	if !reflect.DeepEqual(d.InstallTemplates, want) {
		t.Errorf("InstallTemplates = %+v, want %+v", d.InstallTemplates, want)
	}
	s := mustParse(t, "shoal.yml", `build:
  build: [make]
  pre_release: [strip bin/app]
deploy:
  install_templates:
    - config/app.conf
    - [templates/nginx.conf, etc/]
`)
	if !reflect.DeepEqual(s.Script("pre_release"), []string{"strip bin/app"}) || !reflect.DeepEqual(s.InstallTemplates, want) {
		t.Errorf("shoal.yml: pre_release %q, templates %+v", s.Script("pre_release"), s.InstallTemplates)
	}
	for src, wantErr := range map[string]string{
		"deploy:\n  install_templates: [/etc/passwd]\n":      "is an absolute path",
		"deploy:\n  install_templates: [../x.tmpl]\n":        "climbs out of the install home",
		"deploy:\n  install_templates: [[a.tmpl, ../etc]]\n": "climbs out of the release",
		"deploy:\n  install_templates: [[a.tmpl, b, c]]\n":   "got a list of 3",
		"deploy:\n  install_tempaltes: [a.tmpl]\n":           "install_templates",
		"build:\n  pre_relase: [x]\n":                        "pre_release",
	} {
		_, err := Parse("shoal.yml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want one with %q", src, err, wantErr)
		}
	}
}
