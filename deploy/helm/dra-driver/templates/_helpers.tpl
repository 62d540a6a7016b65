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

{{/* CEL: the JSON type of the value of expression . in the words of the CLI's messages. */}}
{{- define "dra-driver.celTypeName" -}}
(type({{ . }}) == null_type ? 'null' : type({{ . }}) == bool ? 'boolean' : (type({{ . }}) == int || type({{ . }}) == uint || type({{ . }}) == double) ? 'number' : type({{ . }}) == string ? 'string' : type({{ . }}) == list ? 'list' : 'object')
{{- end -}}

{{/* CEL: true when the value of expression . is not a quantity (a quantity string or a number). */}}
{{- define "dra-driver.celNotQuantity" -}}
!((type({{ . }}) == int || type({{ . }}) == double) || (type({{ . }}) == string && isQuantity({{ . }})))
{{- end -}}

{{/* CEL: why the value of expression . is not a quantity. */}}
{{- define "dra-driver.celQuantityError" -}}
(type({{ . }}) == string ? 'quantity \'' + {{ . }} + '\' is not a quantity such as 10Gi, 512Mi or 1.5' : 'must be a quantity: a string such as "80Gi" or a number, not ' + {{ include "dra-driver.celTypeName" . }})
{{- end -}}

{{/* CEL: true when the quantity (string or number) of expression . is zero or negative. */}}
{{- define "dra-driver.celNotPositive" -}}
!quantity(type({{ . }}) == string ? {{ . }} : string({{ . }})).isGreaterThan(quantity('0'))
{{- end -}}
