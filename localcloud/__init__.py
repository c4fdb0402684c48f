"""The local cloud: runs the SAM application on one machine with no Docker and no AWS account.

Development-only. Nothing here ships to AWS: moto stands in for the AWS services, a local gateway
stands in for API Gateway, a poller for Lambda's SQS integration and a timer for EventBridge.
Everything it creates or runs is read from ``template.yaml``.
"""
