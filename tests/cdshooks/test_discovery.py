from cds_service.cdshooks.discovery import load_services


def test_every_service_definition_has_the_required_fields():
    services = load_services()
    assert "hip-fracture-order-select" in services
    for service in services.values():
        assert service.hook and service.id and service.description
        for template in (service.prefetch or {}).values():
            # Only context tokens the spec allows in prefetch templates.
            assert "{{" not in template.replace("{{context.patientId}}", "").replace("{{context.userId}}", "")
