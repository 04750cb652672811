{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "sglang-vlm-canary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name. Kept to 40 characters: Job names become a pod label value (63 at most)
and the longest, "<prefix>-loadtest-master-r<revision>", adds 23 up to revision 99999.
*/}}
{{- define "sglang-vlm-canary.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sglang-vlm-canary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods. */}}
{{- define "sglang-vlm-canary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sglang-vlm-canary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "sglang-vlm-canary.labels" -}}
helm.sh/chart: {{ include "sglang-vlm-canary.chart" . }}
{{ include "sglang-vlm-canary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sglang-vlm-canary
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one arm's pods; call with (dict "root" $ "arm" "baseline"). The component label
is the arm's name: the monitors relabel it into the metric label `arm`.
*/}}
{{- define "sglang-vlm-canary.armSelectorLabels" -}}
{{ include "sglang-vlm-canary.selectorLabels" .root }}
app.kubernetes.io/component: {{ .arm }}
{{- end }}

{{/* Object names the orchestrator and the monitors refer to; one definition each. */}}
{{- define "sglang-vlm-canary.armName" -}}
{{- printf "%s-%s" (include "sglang-vlm-canary.fullname" .root) .arm }}
{{- end }}

{{- define "sglang-vlm-canary.routeName" -}}
{{- include "sglang-vlm-canary.fullname" . }}
{{- end }}

{{- define "sglang-vlm-canary.stateConfigMapName" -}}
{{- printf "%s-rollout-state" (include "sglang-vlm-canary.fullname" .) }}
{{- end }}

{{- define "sglang-vlm-canary.orchestratorServiceAccountName" -}}
{{- if .Values.orchestrator.serviceAccount.create }}
{{- default (printf "%s-orchestrator" (include "sglang-vlm-canary.fullname" .)) .Values.orchestrator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.orchestrator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" with the tag defaulting to the appVersion; call with (dict "root" $ "image" ...). */}}
{{- define "sglang-vlm-canary.serverImage" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* 12 hex digits naming the two builds as deployed: everything that shapes the server pods. */}}
{{- define "sglang-vlm-canary.buildsChecksum" -}}
{{- dict "server" .Values.server "arms" .Values.arms | toJson | sha256sum | trunc 12 }}
{{- end }}

{{/*
Arms that are deployed, in a fixed order. Returns a comma-separated string because templates can
only return strings.
*/}}
{{- define "sglang-vlm-canary.deployedArms" -}}
{{- if .Values.arms.canary.enabled }}baseline,canary{{ else }}baseline{{ end }}
{{- end }}

{{/* Checks that the schema cannot express; each names the bad values. */}}
{{- define "sglang-vlm-canary.validate" -}}
{{- $w := .Values.route.weights }}
{{- if ne (add $w.baseline $w.canary) 100 }}
{{- fail (printf "route.weights: baseline (%v) + canary (%v) must be 100" $w.baseline $w.canary) }}
{{- end }}
{{- if and (not .Values.arms.canary.enabled) (ne (int $w.canary) 0) }}
{{- fail (printf "route.weights.canary is %v but arms.canary.enabled is false: a disabled arm cannot take traffic" $w.canary) }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled are both true: enable one, both would scrape the same pods twice" }}
{{- end }}
{{- if and .Values.orchestrator.enabled (not .Values.arms.canary.enabled) }}
{{- fail "orchestrator.enabled is true but arms.canary.enabled is false: there is no canary to roll out; set orchestrator.enabled=false" }}
{{- end }}
{{- if and .Values.orchestrator.enabled (not .Values.route.enabled) }}
{{- fail "orchestrator.enabled is true but route.enabled is false: the orchestrator moves traffic through the HTTPRoute" }}
{{- end }}
{{- if and .Values.loadtest.enabled (not .Values.loadtest.host) }}
{{- fail "loadtest.host is empty but loadtest.enabled is true: set it to the Gateway's base URL (e.g. http://gateway.example:80)" }}
{{- end }}
{{- if and .Values.loadtest.enabled (not (.Files.Get "files/loadtest/vlm.py")) }}
{{- fail "loadtest.enabled is true but the chart holds no files/loadtest/vlm.py: files/loadtest must link to the project's loadtest/ (a chart packaged from a checkout carries the files)" }}
{{- end }}
{{- end }}

