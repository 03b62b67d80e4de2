{{/*
Shared templates for the Python gRPC services (gateway, vad, tokenizer, llm, tools, tts, vocoder, rlhf).
Each is called with (dict "ctx" $ "name" "<component>") from templates/<component>/*.yaml.
*/}}

{{- define "stepaudio.component.deployment" -}}
{{- $c := index .ctx.Values .name -}}
{{- $v := .ctx.Values -}}
{{- $p := include "stepaudio.envPrefix" .name -}}
{{- $gpu := eq (include "stepaudio.usesGpu" .) "true" -}}
{{- $fullname := include "stepaudio.fullname" .ctx -}}
{{- $worker := eq .name "rlhf" -}}{{/* Kafka consumer: no gRPC server, no metrics port */}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "stepaudio.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
  {{- with $v.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- if $worker }}
    type: Recreate{{/* one writer of the dataset directory at a time */}}
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: {{ ternary 1 0 $gpu }}
      maxSurge: {{ ternary 0 1 $gpu }}{{/* GPU pods: no surge so a rollout never needs a spare GPU */}}
    {{- end }}
  selector:
    matchLabels:
      {{- include "stepaudio.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "stepaudio.labels" . | nindent 8 }}
      annotations:
        checksum/values: {{ toJson $c | sha256sum | trunc 16 }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "stepaudio.serviceAccountName" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "stepaudio.terminationGrace" . }}
      {{- include "stepaudio.scheduling" . | trim | nindent 6 }}
      containers:
        - name: {{ .name }}
          image: {{ include "stepaudio.image" . }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["-m", "services.{{ .name }}"]
          command: ["python"]
          {{- if not $worker }}
          ports:
            - name: grpc
              containerPort: {{ $c.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- end }}
          env:
            {{- if not $worker }}
            - name: {{ $p }}HOST
              value: "0.0.0.0"
            - name: {{ $p }}PORT
              value: {{ $c.port | quote }}
            - name: {{ $p }}METRICS_PORT
              value: {{ $v.metrics.port | quote }}
            - name: {{ $p }}DRAIN_GRACE_S
              value: {{ if eq .name "gateway" }}{{ $c.drain.graceSeconds | quote }}{{ else }}"10"{{ end }}
            {{- end }}
            - name: {{ $p }}PROFILE
              value: {{ $v.profile | quote }}
            {{- if $v.internalAuth.existingSecret }}
            - name: {{ if eq .name "gateway" }}STEPAUDIO_GATEWAY_STAGE_TOKEN{{ else }}{{ $p }}AUTH_TOKEN{{ end }}
              valueFrom:
                secretKeyRef:
                  name: {{ $v.internalAuth.existingSecret }}
                  key: {{ $v.internalAuth.key }}
            {{- end }}
            {{- if and $v.modelStore.enabled (has .name (list "tokenizer" "tts" "vocoder")) }}
            - name: {{ $p }}MODEL_DIR
              value: {{ printf "%s/%s" $v.modelStore.mountPath (index $v.modelStore.subPaths .name) | quote }}
            {{- end }}
            {{- with include "stepaudio.otlpEndpoint" .ctx }}
            - name: OTEL_EXPORTER_OTLP_ENDPOINT
              value: {{ . | quote }}
            - name: {{ $p }}OTLP_ENDPOINT
              value: {{ . | quote }}
            {{- end }}
            - name: OTEL_SERVICE_NAME
              value: {{ printf "stepaudio-%s" .name | quote }}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ printf "service.namespace=%s,deployment.environment=%s,stepaudio.profile=%s" .ctx.Release.Namespace $v.environment $v.profile | quote }}
            {{- if eq .name "gateway" }}
            {{- range $stage := list "vad" "tokenizer" "llm" "tools" "tts" }}
            - name: {{ printf "STEPAUDIO_GATEWAY_%s_ADDR" (upper $stage) }}
              value: {{ printf "%s-%s:%v" $fullname $stage (index $v $stage).port | quote }}
            {{- end }}
            - name: STEPAUDIO_CONVLOG_SPOOL_DIR
              value: /var/lib/stepaudio/convlog/spool
            - name: STEPAUDIO_CONVLOG_AUDIO_DIR
              value: /var/lib/stepaudio/convlog/audio
            - name: STEPAUDIO_CONVLOG_AUDIO_BASE_URI
              value: {{ $c.audioBaseUri | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_SESSIONS
              value: {{ $c.maxSessions | quote }}
            {{- if $c.auth.jwksUrl }}
            - name: STEPAUDIO_GATEWAY_JWKS_URL
              value: {{ $c.auth.jwksUrl | quote }}
            {{- end }}
            {{- if or $c.auth.jwksUrl (and $c.auth.existingSecret $c.auth.jwks) }}
            - name: STEPAUDIO_GATEWAY_JWT_AUDIENCE
              value: {{ $c.auth.jwtAudience | quote }}
            - name: STEPAUDIO_GATEWAY_JWT_ISSUER
              value: {{ $c.auth.jwtIssuer | quote }}
            {{- end }}
            {{- if $c.auth.existingSecret }}
            {{- if $c.auth.apiKeys }}
            - name: STEPAUDIO_GATEWAY_API_KEYS_FILE
              value: /etc/stepaudio/auth/api-keys.json
            {{- end }}
            {{- if $c.auth.jwks }}
            - name: STEPAUDIO_GATEWAY_JWKS_FILE
              value: /etc/stepaudio/auth/jwks.json
            {{- end }}
            {{- end }}
            {{- if $c.tls.existingSecret }}
            - name: STEPAUDIO_GATEWAY_TLS_CERT_FILE
              value: /etc/stepaudio/tls/tls.crt
            - name: STEPAUDIO_GATEWAY_TLS_KEY_FILE
              value: /etc/stepaudio/tls/tls.key
            - name: STEPAUDIO_GATEWAY_HEALTH_PORT
              value: {{ $c.tls.healthPort | quote }}
            {{- end }}
            - name: STEPAUDIO_GATEWAY_LLM_INPUT
              value: {{ ternary "audio_tokens" "transcript" (eq $v.profile "stepaudio") | quote }}
            - name: STEPAUDIO_GATEWAY_TENANT_MAX_SESSIONS
              value: {{ $c.quotas.sessionsPerTenant | quote }}
            - name: STEPAUDIO_GATEWAY_TENANT_REQUESTS_PER_MIN
              value: {{ $c.quotas.requestsPerMinute | quote }}
            - name: STEPAUDIO_GATEWAY_TENANT_AUDIO_S_PER_MIN
              value: {{ $c.quotas.audioSecondsPerMinute | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_REALTIME_FACTOR
              value: {{ $c.limits.maxRealtimeFactor | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_AUDIO_BURST_MS
              value: {{ $c.limits.maxAudioBurstMs | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_UTTERANCE_MS
              value: {{ $c.limits.maxUtteranceMs | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_SESSION_S
              value: {{ $c.limits.maxSessionSeconds | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_PENDING_EVENTS
              value: {{ $c.limits.maxPendingEvents | quote }}
            - name: STEPAUDIO_GATEWAY_MAX_TEXT_CHARS
              value: {{ $c.limits.maxTextChars | quote }}
            - name: STEPAUDIO_GATEWAY_STALL_TIMEOUT_S
              value: {{ $c.limits.stallTimeoutSeconds | quote }}
            {{- if $v.redis.existingSecret }}
            - name: STEPAUDIO_GATEWAY_REDIS_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $v.redis.existingSecret }}
                  key: {{ $v.redis.urlKey }}
            {{- else }}
            - name: STEPAUDIO_GATEWAY_REDIS_URL
              value: {{ $v.redis.url | quote }}
            {{- end }}
            {{- end }}
            {{- if eq .name "llm" }}
            - name: STEPAUDIO_LLM_TRITON_URLS
              value: {{ default (printf "%s-triton:%v" $fullname $v.triton.ports.grpc) $c.tritonUrls | quote }}
            {{- end }}
            {{- if and (eq .name "tts") (eq $v.profile "stepaudio") }}
            {{- /* TTS-3B samples on Triton (step_audio_tts); flow matching and HiFT stay in the TTS pod */}}
            - name: STEPAUDIO_TTS_LM_BACKEND
              value: "triton"
            - name: STEPAUDIO_TTS_TRITON_URLS
              value: {{ printf "%s-triton:%v" $fullname $v.triton.ports.grpc | quote }}
            {{- end }}
            {{- if and (has .name (list "gateway" "rlhf")) $v.kafka.bootstrapServers }}
            {{- /* gateway: the conversation-log producer reads STEPAUDIO_CONVLOG_KAFKA_*; rlhf: STEPAUDIO_RLHF_KAFKA_* */}}
            {{- include "stepaudio.kafkaEnv" (dict "ctx" .ctx "name" (ternary "convlog" "rlhf" (eq .name "gateway"))) | nindent 12 }}
            {{- end }}
            {{- if and (eq .name "gateway") $v.kafka.bootstrapServers }}
            - name: STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS
              value: {{ $v.kafka.bootstrapServers | quote }}
            - name: STEPAUDIO_CONVLOG_TOPIC
              value: {{ $v.kafka.topics.conversation | quote }}
            {{- else if eq .name "gateway" }}
            - name: STEPAUDIO_CONVLOG_BOOTSTRAP_SERVERS
              value: ""
            {{- end }}
            {{- if $worker }}
            - name: STEPAUDIO_RLHF_BOOTSTRAP_SERVERS
              value: {{ $v.kafka.bootstrapServers | quote }}
            - name: STEPAUDIO_RLHF_TOPIC
              value: {{ $v.kafka.topics.conversation | quote }}
            - name: STEPAUDIO_RLHF_DLQ_TOPIC
              value: {{ $v.kafka.topics.dlq | quote }}
            - name: STEPAUDIO_RLHF_DATASET_DIR
              value: /var/lib/stepaudio/rlhf/dataset
            {{- end }}
            {{- range $k, $val := $c.env }}
            - name: {{ $k }}
              value: {{ $val | quote }}
            {{- end }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if eq .name "gateway" }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "{{ $c.drain.preStopSleepSeconds }}"]
          {{- end }}
          {{- if $worker }}
          # services.rlhf has no health endpoint yet: the probes check the process answers exec and that the
          # dataset volume is writable (see docs/DEPLOY.md, "Known gaps").
          startupProbe:
            exec:
              command: ["test", "-w", "/var/lib/stepaudio/rlhf"]
            periodSeconds: 5
            failureThreshold: 12
          readinessProbe:
            exec:
              command: ["test", "-w", "/var/lib/stepaudio/rlhf"]
            periodSeconds: 30
          livenessProbe:
            exec:
              command: ["test", "-w", "/var/lib/stepaudio/rlhf"]
            periodSeconds: 30
            failureThreshold: 3
          {{- else }}
          startupProbe:
            grpc:
              port: {{ include "stepaudio.healthPort" . }}
            periodSeconds: {{ $c.startupProbe.periodSeconds }}
            failureThreshold: {{ $c.startupProbe.failureThreshold }}
            timeoutSeconds: 3
          readinessProbe:
            grpc:
              port: {{ include "stepaudio.healthPort" . }}
            periodSeconds: 5
            failureThreshold: 2
            timeoutSeconds: 3
          livenessProbe:
            grpc:
              port: {{ include "stepaudio.healthPort" . }}
              service: liveness{{/* stays SERVING while a dependency is down or the pod drains */}}
            periodSeconds: 10
            failureThreshold: 6
            timeoutSeconds: 5
          {{- end }}
          resources:
            {{- include "stepaudio.resources" . | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if and $v.modelStore.enabled (has .name (list "tokenizer" "tts" "vocoder")) }}
            - name: models
              mountPath: {{ $v.modelStore.mountPath }}
              readOnly: true
            {{- end }}
            {{- if and (has .name (list "gateway" "rlhf")) $v.kafka.tls.enabled }}
            - name: kafka-tls
              mountPath: /etc/stepaudio/kafka-tls
              readOnly: true
            {{- end }}
            {{- if eq .name "gateway" }}
            - name: state
              mountPath: /var/lib/stepaudio/convlog
            {{- if $c.auth.existingSecret }}
            - name: auth
              mountPath: /etc/stepaudio/auth
              readOnly: true
            {{- end }}
            {{- if $c.tls.existingSecret }}
            - name: tls
              mountPath: /etc/stepaudio/tls
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if $worker }}
            - name: state
              mountPath: /var/lib/stepaudio/rlhf
            {{- end }}
            {{- if $gpu }}
            - name: dshm
              mountPath: /dev/shm
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $c.tmpSizeLimit | default "1Gi" }}
        {{- if and $v.modelStore.enabled (has .name (list "tokenizer" "tts" "vocoder")) }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ include "stepaudio.modelStoreClaim" .ctx }}
            readOnly: true
        {{- end }}
        {{- if and (has .name (list "gateway" "rlhf")) $v.kafka.tls.enabled }}
        - name: kafka-tls
          secret:
            secretName: {{ $v.kafka.tls.existingSecret }}
        {{- end }}
        {{- if eq .name "gateway" }}
        - name: state{{/* conversation-log spool: survives container restarts, not pod deletion */}}
          emptyDir:
            sizeLimit: {{ $c.spoolSizeLimit }}
        {{- if $c.auth.existingSecret }}
        - name: auth
          secret:
            secretName: {{ $c.auth.existingSecret }}
        {{- end }}
        {{- if $c.tls.existingSecret }}
        - name: tls
          secret:
            secretName: {{ $c.tls.existingSecret }}
        {{- end }}
        {{- end }}
        {{- if $worker }}
        - name: state
          {{- if $c.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ default (printf "%s-rlhf-dataset" $fullname) $c.persistence.existingClaim }}
          {{- else }}
          emptyDir:
            sizeLimit: {{ $c.persistence.size }}
          {{- end }}
        {{- end }}
        {{- if $gpu }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $v.gpu.shmSize }}
        {{- end }}
{{- end -}}

{{- define "stepaudio.terminationGrace" -}}
{{- $c := index .ctx.Values .name -}}
{{- if eq .name "gateway" -}}
{{- add (int $c.drain.preStopSleepSeconds) (int $c.drain.graceSeconds) 10 -}}
{{- else -}}
{{- $c.terminationGracePeriodSeconds | default 30 -}}
{{- end -}}
{{- end -}}

{{- define "stepaudio.modelStoreClaim" -}}
{{- default (printf "%s-models" (include "stepaudio.fullname" .)) .Values.modelStore.existingClaim -}}
{{- end -}}

{{- define "stepaudio.component.service" -}}
{{- $c := index .ctx.Values .name -}}
{{- if ne .name "rlhf" }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "stepaudio.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
  {{- with $c.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $c.service.type | default "ClusterIP" }}
  selector:
    {{- include "stepaudio.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $c.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ .ctx.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}
{{- end -}}

{{- define "stepaudio.component.serviceAccount" -}}
{{- if .ctx.Values.serviceAccount.create }}
{{- $c := index .ctx.Values .name -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "stepaudio.serviceAccountName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
  {{- with (merge (dict) (default dict $c.serviceAccountAnnotations) .ctx.Values.serviceAccount.annotations) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{- define "stepaudio.component.pdb" -}}
{{- $c := index .ctx.Values .name -}}
{{- if $c.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "stepaudio.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
spec:
  {{- if $c.pdb.minAvailable }}
  minAvailable: {{ $c.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $c.pdb.maxUnavailable | default 1 }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "stepaudio.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* HPA: CPU utilisation, plus custom Pods metrics served by prometheus-adapter (see infra/prometheus-adapter). */}}
{{- define "stepaudio.component.hpa" -}}
{{- $c := index .ctx.Values .name -}}
{{- if $c.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "stepaudio.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "stepaudio.componentName" . }}
  minReplicas: {{ $c.autoscaling.minReplicas }}
  maxReplicas: {{ $c.autoscaling.maxReplicas }}
  metrics:
    {{- if $c.autoscaling.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $c.autoscaling.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- range $c.autoscaling.customMetrics }}
    - type: Pods
      pods:
        metric:
          name: {{ .name }}
        target:
          type: AverageValue
          averageValue: {{ .averageValue | quote }}
    {{- end }}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Pods
          value: {{ $c.autoscaling.scaleUpPods | default 2 }}
          periodSeconds: 60
    scaleDown:
      stabilizationWindowSeconds: {{ $c.autoscaling.scaleDownStabilizationSeconds | default 300 }}
      policies:
        - type: Pods
          value: 1
          periodSeconds: 120
{{- end }}
{{- end -}}

{{/*
NetworkPolicy: ingress on the gRPC port only from pods of this release (the gateway alone is open to the
networkPolicy.gateway.from peers, everyone when empty); metrics only from the monitoring namespace. Egress
(networkPolicy.egress.enabled): DNS, the release's own pods and networkPolicy.egress.dependencies only.
*/}}
{{- define "stepaudio.component.networkPolicy" -}}
{{- $c := index .ctx.Values .name -}}
{{- $np := .ctx.Values.networkPolicy -}}
{{- if $np.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "stepaudio.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "stepaudio.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "stepaudio.selectorLabels" . | nindent 6 }}
  policyTypes: [Ingress{{ if $np.egress.enabled }}, Egress{{ end }}]
  {{- if $np.egress.enabled }}
  egress:
    - ports:{{/* DNS */}}
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
    - to:{{/* the other components of this release */}}
        - podSelector:
            matchLabels:
              {{- include "stepaudio.selectorLabels" (dict "ctx" .ctx "name" "") | nindent 14 }}
    {{- with $np.egress.dependencies }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- if eq .name "rlhf" }}
  ingress: []{{/* worker: accepts no connections */}}
  {{- else }}
  ingress:
    {{- if eq .name "gateway" }}
    - ports:
        - port: {{ $c.port }}
          protocol: TCP
      {{- with $np.gateway.from }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- else }}
    - ports:
        {{- range (default (list (dict "port" $c.port)) .ports) }}
        - port: {{ .port }}
          protocol: TCP
        {{- end }}
      from:
        - podSelector:
            matchLabels:
              {{- include "stepaudio.selectorLabels" (dict "ctx" .ctx "name" "") | nindent 14 }}
    {{- end }}
    - ports:
        - port: {{ default .ctx.Values.metrics.port .metricsPort }}
          protocol: TCP
      from:
        - namespaceSelector:
            matchLabels:
              {{- toYaml $np.metricsNamespaceSelector | nindent 14 }}
        - podSelector:
            matchLabels:
              {{- include "stepaudio.selectorLabels" (dict "ctx" .ctx "name" "") | nindent 14 }}
  {{- end }}
{{- end }}
{{- end -}}


{{/* The port kubelet's gRPC probes use: the service port, or the plaintext health port when the gateway serves
TLS (native gRPC probes cannot speak TLS). */}}
{{- define "stepaudio.healthPort" -}}
{{- $c := index .ctx.Values .name -}}
{{- if and (eq .name "gateway") $c.tls.existingSecret -}}
{{- $c.tls.healthPort -}}
{{- else -}}
{{- $c.port -}}
{{- end -}}
{{- end -}}
