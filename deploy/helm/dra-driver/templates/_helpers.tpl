{{/* The release's base name: <release> when it contains the chart's name, else <release>-<chart>. */}}
{{- define "dra-driver.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dra-driver.kubeletPluginName" -}}
{{- printf "%s-kubelet-plugin" (include "dra-driver.fullname" .) -}}
{{- end -}}

{{- define "dra-driver.controllerName" -}}
{{- printf "%s-controller" (include "dra-driver.fullname" .) -}}
{{- end -}}

{{- define "dra-driver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "dra-driver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: dra-driver
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The settings both components share, as environment twins of their flags. */}}
{{- define "dra-driver.commonEnv" -}}
- name: DRA_DRIVER_NAME
  value: {{ .Values.driverName | quote }}
- name: DRA_DRIVER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: DRA_DRIVER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- end -}}
