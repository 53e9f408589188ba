Feature: Results where radiologists look
  As a radiologist reading in the PACS
  I want the AI's hip finding stored beside the images as standard DICOM
  So that I see the same finding, marked unverified, that the ordering physician saw in the EHR

  Scenario: A radiologist opens the study in the PACS and sees the AI result beside the images
    Given a hip radiograph routed to the service's DICOM node, which stores results in the PACS
    When the ordering physician's EHR sends an order-select hook for that study
    Then the card comes from the result already analysed on arrival and says it is also in the PACS
    And the study in the PACS holds a structured report and a heat-map image in new series
    And the structured report is unverified, names both models and stages the displaced right femoral-neck fracture
