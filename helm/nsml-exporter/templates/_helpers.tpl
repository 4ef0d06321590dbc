{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "nsml-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already has the chart's. */}}
{{- define "nsml-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nsml-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nsml-exporter.labels" -}}
helm.sh/chart: {{ include "nsml-exporter.chart" . }}
{{ include "nsml-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nsml-exporter
{{- end }}

{{- define "nsml-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nsml-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nsml-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nsml-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the NSML keys: the user's, or the one this chart renders. */}}
{{- define "nsml-exporter.secretName" -}}
{{- default (include "nsml-exporter.fullname" .) .Values.nsml.existingSecret }}
{{- end }}

{{/* The image: image.tag, or the release the chart was packaged with. A chart from an
unreleased checkout (appVersion 0.0.0-dev) has no published image: it fails and says what to do,
rather than deploy a pod that cannot pull. */}}
{{- define "nsml-exporter.image" -}}
{{- if and (not .Values.image.tag) (hasSuffix "-dev" .Chart.AppVersion) }}
{{- fail (printf "this nsml-exporter chart is an unreleased checkout (appVersion %s): no image is published for it. Set image.repository and image.tag to an image you built (README: Docker), or install a released chart: helm install nsml-exporter oci://ghcr.io/nsml-exporter/charts/nsml-exporter --version X.Y.Z" .Chart.AppVersion) }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nsml-exporter.scheme" -}}
{{- if .Values.webConfig.enabled }}{{ .Values.webConfig.scheme }}{{ else }}HTTP{{ end }}
{{- end }}

{{/* A config value as an environment string: lists comma-joined, whole numbers without an
exponent (YAML numbers reach templates as float64, and 16777216 would print as 1.6777216e+07). */}}
{{- define "nsml-exporter.envValue" -}}
{{- if kindIs "slice" . }}{{ join "," . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}
